//! What the core keeps for the runtime and hands back with the event that
//! needs it: the fields calls were pipelined on, with the return of their
//! question; the runtime's data of an embargo, when it lifts or the
//! connection ends.

mod harness;

use capnp_actix_proto::captp::{Event, OutContent, OutTarget};
use harness::{plain, Pair};

/// A calls B's bootstrap (question 0) and pipelines calls on fields of it.
fn call(p: &mut Pair, target: &OutTarget) -> u32 {
    p.a.conn
        .call(
            target,
            1,
            0,
            OutContent::Reader(plain().get_root_as_reader().unwrap()),
            &[],
        )
        .unwrap()
}

fn field(question: u32, path: &[u16]) -> OutTarget {
    OutTarget::Answer {
        question,
        path: path.to_vec(),
    }
}

/// B answers every call and bootstrap it has been sent with an empty
/// result, in order.
fn b_answers_all(p: &mut Pair) {
    while let Some(e) = p.b.conn.next_event() {
        match e {
            Event::Bootstrap { answer, .. } | Event::Call { answer, .. } => {
                p.b.conn.return_results(
                    answer,
                    OutContent::Reader(plain().get_root_as_reader().unwrap()),
                    &[],
                )
            }
            _ => {}
        }
    }
}

#[test]
fn the_return_carries_the_fields_calls_were_pipelined_on_most_recent_last() {
    let mut p = Pair::new();
    let boot = p.a.conn.bootstrap(b"").unwrap();
    // Pipelined on field 0, then 1, then 0 again; and one call that
    // nothing is pipelined on.
    call(&mut p, &field(boot, &[0]));
    call(&mut p, &field(boot, &[1, 2]));
    call(&mut p, &field(boot, &[0]));
    let plain_q = call(&mut p, &field(boot, &[]));
    while !p.a.sent.is_empty() || p.a.conn.has_output() {
        p.a_to_b();
        b_answers_all(&mut p);
    }
    p.flush();
    let mut returns = Vec::new();
    while let Some(e) = p.a.conn.next_event() {
        if let Event::Return {
            question,
            pipelined,
            ..
        } = e
        {
            returns.push((question, pipelined));
        }
    }
    let (_, boot_fields) = returns.iter().find(|(q, _)| *q == boot).unwrap();
    assert_eq!(boot_fields, &[vec![1, 2], vec![0], vec![]]);
    let (_, none) = returns.iter().find(|(q, _)| *q == plain_q).unwrap();
    assert!(none.is_empty());
    assert_eq!(none.capacity(), 0, "no pipelining, no allocation");
    p.assert_finished();
}
