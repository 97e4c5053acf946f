//! [`shield`]: opting a method body out of cancellation. A shielded body
//! that its caller gives up on is not dropped but handed to a task of its
//! own, which runs it to completion.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Makes a method body immune to cancellation: if the caller gives up, the
/// body still runs to completion (on the current thread) instead of being
/// dropped. Must be polled inside an actix system.
pub fn shield<F>(body: F) -> Shield<F>
where
    F: Future + 'static,
{
    Shield {
        body: Some(Box::pin(body)),
    }
}

/// See [`shield`].
pub struct Shield<F: Future + 'static> {
    body: Option<Pin<Box<F>>>,
}

impl<F: Future + 'static> Future for Shield<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.body.as_mut() {
            Some(b) => {
                let r = b.as_mut().poll(cx);
                if r.is_ready() {
                    self.body = None;
                }
                r
            }
            None => Poll::Pending,
        }
    }
}

impl<F: Future + 'static> Drop for Shield<F> {
    fn drop(&mut self) {
        if let Some(body) = self.body.take() {
            actix_rt::spawn(async move {
                let _ = body.await;
            });
        }
    }
}
