//! placeholder
pub use capnp_actix_actors::*;
pub use capnp_actix_schemas as schemas;
