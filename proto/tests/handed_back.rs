//! What the core keeps for the runtime and hands back with the event that
//! needs it: the fields calls were pipelined on, with the return of their
//! question; the runtime's data of an embargo, when it lifts or the
//! connection ends.

mod harness;

use capnp_actix_proto::captp::{Conn, ConnLimits, Event, OutCap, OutContent, OutTarget};
use capnp_actix_proto::content::cap_root_message;
use capnp_actix_proto::Limits;
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

/// A core whose embargoes keep a label, as a runtime keeps held calls.
type Core = Conn<u32, &'static str>;

fn core() -> Core {
    Conn::new(ConnLimits::default(), Limits::default())
}

fn deliver(from: &mut Core, to: &mut Core) {
    let bytes = from.take_output();
    to.receive(&bytes);
}

/// A asks B for its bootstrap capability (B's object 1) and starts an
/// embargo, labelled, on each of `paths` of the return while handling it.
fn embargoed_return(a: &mut Core, b: &mut Core, paths: &[(&[u16], &'static str)]) -> Vec<u32> {
    let q = a.bootstrap(b"").unwrap();
    deliver(a, b);
    let Some(Event::Bootstrap { answer, .. }) = b.next_event() else {
        panic!("no bootstrap")
    };
    b.return_results(
        answer,
        OutContent::Reader(cap_root_message().get_root_as_reader().unwrap()),
        &[OutCap::Local(1)],
    );
    deliver(b, a);
    let Some(Event::Return { question, .. }) = a.next_event() else {
        panic!("no return")
    };
    assert_eq!(question, q);
    paths
        .iter()
        .map(|(path, label)| a.disembargo_request(q, path, label).unwrap())
        .collect()
}

#[test]
fn embargo_data_comes_back_when_the_embargo_lifts() {
    let (mut a, mut b) = (core(), core());
    let ids = embargoed_return(&mut a, &mut b, &[(&[], "calls held on the bootstrap")]);
    assert_eq!(a.table_sizes().embargoes, 1);
    // The runtime reaches what waits on the embargo (to add held calls).
    let waiting: Vec<_> = a.embargoes_waiting_mut().map(|(id, w)| (id, *w)).collect();
    assert_eq!(waiting, [(ids[0], "calls held on the bootstrap")]);
    deliver(&mut a, &mut b);
    let Some(Event::Loopback { embargo, .. }) = b.next_event() else {
        panic!("no loopback")
    };
    b.disembargo_reply(embargo, 0);
    deliver(&mut b, &mut a);
    let lifted: Vec<_> = std::iter::from_fn(|| a.next_event())
        .filter_map(|e| match e {
            Event::EmbargoLifted { embargo, waiting } => Some((embargo, waiting)),
            _ => None,
        })
        .collect();
    assert_eq!(lifted, [(ids[0], "calls held on the bootstrap")]);
    assert_eq!(a.table_sizes().embargoes, 0);
    assert!(a.aborted().is_none() && b.aborted().is_none());
}

#[test]
fn embargo_data_comes_back_after_the_abort_in_id_order() {
    let (mut a, mut b) = (core(), core());
    let ids = embargoed_return(&mut a, &mut b, &[(&[], "first"), (&[0], "second")]);
    a.abort(capnp::Error::disconnected("going away".into()));
    let events: Vec<String> = std::iter::from_fn(|| a.next_event())
        .map(|e| match e {
            Event::Aborted(e) => format!("aborted({})", e.extra),
            Event::EmbargoBroken { embargo, waiting } => format!("broken:{embargo}:{waiting}"),
            _ => "other".into(),
        })
        .collect();
    assert_eq!(
        events,
        [
            "aborted(going away)".to_string(),
            format!("broken:{}:first", ids[0]),
            format!("broken:{}:second", ids[1]),
        ]
    );
    assert_eq!(a.table_sizes().embargoes, 0);
    // Too late for another: its data comes straight back.
    assert_eq!(a.disembargo_request_import(0, "late"), Err("late"));
}
