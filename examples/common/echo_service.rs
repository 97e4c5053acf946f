//! The tutorial's echo service, shared by the `echo` example and the tests.

use std::cell::RefCell;
use std::time::Duration;

use capnp_actix::schemas::echo_api_capnp::{callback, echo};
use capnp_actix::{Cap, SturdyUri};

/// A logger that prints what it is given, with a label.
pub struct Logger {
    pub label: String,
    /// Where lines go (stdout in the example; a vector in tests).
    pub sink: Sink,
}

/// Where a logger's lines go.
#[derive(Clone)]
pub enum Sink {
    Stdout,
    Memory(std::sync::Arc<std::sync::Mutex<Vec<String>>>),
}

impl Sink {
    pub fn write(&self, line: String) {
        match self {
            Sink::Stdout => println!("{line}"),
            Sink::Memory(v) => v.lock().unwrap().push(line),
        }
    }
}

impl callback::Server for Logger {
    async fn log(
        self: std::rc::Rc<Self>,
        params: callback::LogParams,
        _: callback::LogResults,
    ) -> Result<(), capnp::Error> {
        let msg = params.get()?.get_msg()?.to_str()?;
        self.sink.write(format!("{}: {msg}", self.label));
        Ok(())
    }
}

/// The echo service: `ping` replies `echo:MSG`; `heartbeat` calls the
/// given callback three times, `interval` apart; `getLogger` returns the
/// service's logger (persistent after [`EchoService::persist_logger`]).
pub struct EchoService {
    pub interval: Duration,
    pub logger: Cap<callback::Client>,
    pub sink: Sink,
    pub created: RefCell<Vec<Cap<callback::Client>>>,
    /// How `createLogger` makes a logger; `None`: a plain, unsaved one.
    pub make_logger: Option<MakeLogger>,
}

/// Makes a labelled logger (one that can be saved, for example).
pub type MakeLogger = std::rc::Rc<dyn Fn(&str) -> Result<Cap<callback::Client>, capnp::Error>>;

impl EchoService {
    pub fn new(interval: Duration, sink: Sink) -> Self {
        let logger = Cap::new(Logger {
            label: "Service logger".into(),
            sink: sink.clone(),
        });
        EchoService {
            interval,
            logger,
            sink,
            created: RefCell::new(Vec::new()),
            make_logger: None,
        }
    }

    /// Makes the service's logger persistent, as in the reference
    /// tutorial: `getLogger` then returns a logger that answers
    /// `Persistent.save` with `uri` (and logs as before). Returns that
    /// logger, for the vat's restorer to serve under `uri`'s service ID.
    pub fn persist_logger(&mut self, uri: &SturdyUri) -> Cap<callback::Client> {
        let persistent = capnp_actix::persist::with_sturdy_ref(self.logger.raw().clone(), uri);
        self.logger = Cap::from_raw(persistent);
        self.logger.clone()
    }
}

impl echo::Server for EchoService {
    async fn ping(
        self: std::rc::Rc<Self>,
        params: echo::PingParams,
        mut results: echo::PingResults,
    ) -> Result<(), capnp::Error> {
        let msg = params.get()?.get_msg()?.to_str()?;
        results.get().set_reply(format!("echo:{msg}"));
        Ok(())
    }

    async fn heartbeat(
        self: std::rc::Rc<Self>,
        params: echo::HeartbeatParams,
        _: echo::HeartbeatResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let msg = p.get_msg()?.to_string()?;
        let callback = p.get_callback()?;
        for beat in 0..3 {
            if beat > 0 {
                actix_rt::time::sleep(self.interval).await;
            }
            let mut req = callback.log_request();
            req.get().set_msg(&msg[..]);
            req.send().promise.await?;
        }
        Ok(())
    }

    async fn get_logger(
        self: std::rc::Rc<Self>,
        _: echo::GetLoggerParams,
        mut results: echo::GetLoggerResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_callback(self.logger.client());
        Ok(())
    }

    async fn create_logger(
        self: std::rc::Rc<Self>,
        params: echo::CreateLoggerParams,
        mut results: echo::CreateLoggerResults,
    ) -> Result<(), capnp::Error> {
        let label = params.get()?.get_label()?.to_string()?;
        let logger = match &self.make_logger {
            Some(make) => make(&label)?,
            None => Cap::<callback::Client>::new(Logger {
                label,
                sink: self.sink.clone(),
            }),
        };
        results.get().set_callback(logger.client());
        Ok(())
    }
}
