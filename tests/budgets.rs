//! Memory budgets (issue 13, item 1), over real Unix sockets against an
//! echo vat (TLS off) with a well-behaved client connected throughout.
//!
//! - `a_peer_that_never_finishes_is_aborted_at_its_result_budget`: a peer
//!   that reads every return but never sends `finish` makes the vat keep
//!   every result; past the connection's budget for results not finished
//!   it is aborted, with a reason naming the budget, and the vat lets go
//!   of everything it kept for it.
//! - `memory_held_for_a_peer_is_returned_when_it_leaves`: a peer makes the
//!   vat hold 56 MiB of results, then leaves: the RSS falls back to within
//!   32 MiB of where it was (the allocator is asked to give memory back).
//! - `the_vat_budget_aborts_the_peer_that_holds_the_most`: two such peers,
//!   each under its connection's budget, together over the vat's: the one
//!   holding the most is aborted, naming the vat's budget; the other is
//!   still served.

#[path = "../examples/common/echo_service.rs"]
#[allow(dead_code)]
mod echo_service;
mod hostile;

use std::time::Duration;

use hostile::{isolated, ping_call, run, EchoVat, In, RawPeer, Ret, Target};

/// The size of each ping's message: its result is as large.
const MSG: usize = 128 << 10;

/// Reads the return of `question` (a ping of [`MSG`] bytes), failing on
/// anything else.
async fn expect_return(p: &mut RawPeer, question: u32) {
    match tokio::time::timeout(Duration::from_secs(10), p.next()).await {
        Ok(Some(In::Return {
            answer,
            ret: Ret::Results { text: Some(t), .. },
        })) if answer == question => assert_eq!(t.len(), MSG + "echo:".len()),
        other => panic!("expected the return of {question}, got {other:?}"),
    }
}

/// Sends pings of [`MSG`] bytes from question `first` on, reading each
/// return and never finishing, until the vat aborts: returns how many
/// were answered and the abort's reason.
async fn ping_until_aborted(p: &mut RawPeer, bootstrap: u32, first: u32) -> (u32, String) {
    let msg = "m".repeat(MSG);
    for q in first..first + 1000 {
        p.send(&ping_call(q, &Target::Import(bootstrap), &msg))
            .await
            .expect("send");
        match tokio::time::timeout(Duration::from_secs(10), p.next()).await {
            Ok(Some(In::Return {
                ret: Ret::Results { .. },
                ..
            })) => {}
            Ok(Some(In::Abort { reason })) => return (q - first, reason),
            other => panic!("expected a return or an abort, got {other:?}"),
        }
    }
    panic!("never aborted");
}

#[test]
fn a_peer_that_never_finishes_is_aborted_at_its_result_budget() {
    isolated(
        "a_peer_that_never_finishes_is_aborted_at_its_result_budget",
        || {
            run(Duration::from_secs(60), async {
                const BUDGET: usize = 1 << 20;
                let mut env = EchoVat::start_configured("never-finishes", |c| {
                    c.with_max_retained_result_bytes(BUDGET)
                })
                .await;
                let mut p = env.raw().await;
                let e = p.bootstrap(0, "").await;
                let (answered, reason) = ping_until_aborted(&mut p, e, 1).await;
                assert!(reason.contains("not finished"), "{reason}");
                assert!(reason.contains(&BUDGET.to_string()), "{reason}");
                // About the budget's worth of results was kept, not more.
                let kept = answered as usize * MSG;
                assert!(
                    kept <= BUDGET && kept + 2 * MSG > BUDGET,
                    "{answered} results of {MSG} bytes kept before the abort"
                );
                p.expect_eof().await;
                env.ping_good().await;
                env.only_good_left().await;
                env.stop().await;
            })
        },
    );
}

#[test]
fn the_vat_budget_aborts_the_peer_that_holds_the_most() {
    isolated("the_vat_budget_aborts_the_peer_that_holds_the_most", || {
        run(Duration::from_secs(60), async {
            const VAT_BUDGET: usize = 2 << 20;
            let mut env =
                EchoVat::start_configured("vat-budget", |c| c.with_memory_budget(VAT_BUDGET)).await;
            let msg = "m".repeat(MSG);

            // The greedy peer keeps 1.5 MiB of results, under its
            // connection's budget (64 MiB) and the vat's.
            let mut greedy = env.raw().await;
            let g = greedy.bootstrap(0, "").await;
            for q in 1..=12 {
                greedy
                    .send(&ping_call(q, &Target::Import(g), &msg))
                    .await
                    .expect("send");
                expect_return(&mut greedy, q).await;
            }

            // The modest peer's results take the vat over its budget: the
            // greedy one, holding the most, is aborted.
            let mut modest = env.raw().await;
            let m = modest.bootstrap(0, "").await;
            let mut q = 1;
            let reason = loop {
                modest
                    .send(&ping_call(q, &Target::Import(m), &msg))
                    .await
                    .expect("send");
                expect_return(&mut modest, q).await;
                q += 1;
                assert!(q < 20, "the greedy peer was never aborted");
                if let Ok(next) =
                    tokio::time::timeout(Duration::from_millis(20), greedy.next()).await
                {
                    match next {
                        Some(In::Abort { reason }) => break reason,
                        other => panic!("expected the greedy peer's abort, got {other:?}"),
                    }
                }
            };
            assert!(reason.contains("memory budget is exhausted"), "{reason}");
            assert!(reason.contains(&VAT_BUDGET.to_string()), "{reason}");
            assert!(reason.contains("holds the most"), "{reason}");
            greedy.expect_eof().await;

            // The modest peer is still served, and so is the good client.
            for q in q..q + 3 {
                modest
                    .send(&ping_call(q, &Target::Import(m), &msg))
                    .await
                    .expect("send");
                expect_return(&mut modest, q).await;
            }
            env.ping_good().await;
            drop(modest);
            env.only_good_left().await;
            env.stop().await;
        })
    });
}

#[test]
fn memory_held_for_a_peer_is_returned_when_it_leaves() {
    isolated("memory_held_for_a_peer_is_returned_when_it_leaves", || {
        run(Duration::from_secs(60), async {
            const HELD: usize = 56 << 20;
            const SLACK: u64 = 32 << 20;
            let mut env = EchoVat::start("memory-returned").await;
            env.ping_good().await;
            let before = hostile::rss();
            let mut p = env.raw().await;
            let e = p.bootstrap(0, "").await;
            let msg = "m".repeat(MSG);
            let calls = (HELD / MSG) as u32;
            for q in 1..=calls {
                p.send(&ping_call(q, &Target::Import(e), &msg))
                    .await
                    .expect("send");
                expect_return(&mut p, q).await;
            }
            let peak = hostile::rss();
            assert!(
                peak > before + (HELD as u64) * 3 / 4,
                "the results were not held: RSS {:.1} MiB -> {:.1} MiB",
                hostile::mib(before),
                hostile::mib(peak)
            );
            drop(p);
            env.only_good_left().await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let now = hostile::rss();
                if now <= before + SLACK {
                    eprintln!(
                        "memory returned: RSS {:.1} MiB, peak {:.1} MiB, after {:.1} MiB",
                        hostile::mib(before),
                        hostile::mib(peak),
                        hostile::mib(now)
                    );
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "RSS stayed at {:.1} MiB after the peer left (before it came: {:.1} MiB, \
                     peak {:.1} MiB)",
                    hostile::mib(now),
                    hostile::mib(before),
                    hostile::mib(peak)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            env.ping_good().await;
            env.stop().await;
        })
    });
}
