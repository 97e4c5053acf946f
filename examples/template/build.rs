//! Compiles `schema/counter.capnp` into `$OUT_DIR/counter_capnp.rs`: capnpc's
//! code and, in its module `actors`, the actor trait `Counter`. Needs the
//! Cap'n Proto compiler (`apt-get install capnproto`).

fn main() {
    capnp_actix_build::Builder::new()
        .src_prefix("schema")
        .file("schema/counter.capnp")
        .run()
        .expect("compiling schema/counter.capnp");
}
