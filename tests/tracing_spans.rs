//! A span per call at debug level. In a test binary of its own: tracing
//! caches per-callsite interest process-wide, so a subscriber installed for
//! one thread races with other tests' threads.

mod support;

use std::sync::Arc;

use capnp_actix::debug::assert_all_released;
use support::*;

#[actix::test]
async fn a_call_span_is_recorded_at_debug_level() {
    use tracing_subscriber::layer::SubscriberExt;
    #[derive(Clone, Default)]
    struct Spans(Arc<std::sync::Mutex<Vec<String>>>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut fields = String::new();
            struct V<'a>(&'a mut String);
            impl tracing::field::Visit for V<'_> {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push_str(&format!("{}={:?} ", f.name(), v));
                }
            }
            attrs.record(&mut V(&mut fields));
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", attrs.metadata().name(), fields));
        }
    }
    let spans = Spans::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry()
            .with(spans.clone())
            .with(tracing_subscriber::filter::LevelFilter::DEBUG),
    );
    let log = Log::default();
    {
        let cap = Probe::cap(&log);
        call(&cap.client(), 1).await.unwrap();
        let spans = spans.0.lock().unwrap().clone();
        let want_cap = format!("cap={}", cap.id());
        assert!(
            spans.iter().any(|s| s.starts_with("call ")
                && s.contains(&want_cap)
                && s.contains("method=0")
                && s.contains("interface=")),
            "{spans:?}"
        );
    }
    assert_all_released().await;
}
