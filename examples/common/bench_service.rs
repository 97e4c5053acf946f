//! The benchmark service of `schemas/bench.capnp`, shared by the `bench`
//! and `load` examples: `ping(n)` returns `n + 1` (so that a reply shows
//! the server read the request) and `echoBytes(data)` returns `data`. It
//! is stateless, and runs on either runtime (ours or the capnp-rpc
//! crate's).

use std::rc::Rc;

use capnp_actix::schemas::bench_capnp::bench;

/// See the module docs.
pub struct BenchServer;

impl bench::Server for BenchServer {
    async fn ping(
        self: Rc<Self>,
        params: bench::PingParams,
        mut results: bench::PingResults,
    ) -> Result<(), capnp::Error> {
        let n = params.get()?.get_n();
        results.get().set_n(n.wrapping_add(1));
        Ok(())
    }

    async fn echo_bytes(
        self: Rc<Self>,
        params: bench::EchoBytesParams,
        mut results: bench::EchoBytesResults,
    ) -> Result<(), capnp::Error> {
        let data = params.get()?.get_data()?;
        results.get().set_data(data);
        Ok(())
    }
}
