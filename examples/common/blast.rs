//! A raw load generator for the `Bench` service: `load blast`.
//!
//! Each connection asks for the bootstrap capability, reads the export ID
//! from the return, then keeps `in_flight` `ping` calls in flight: the
//! call and finish messages are built once, and each is sent with its
//! question ID patched in; of each message that comes back, only the kind
//! and the answer ID are read. A finished question's ID is reused at once
//! for the next call. This costs the client a small fraction of what an
//! RPC client spends per call, so the server, not the clients, is what the
//! benchmark measures.

use std::time::{Duration, Instant};

use capnp::message::{Builder, ReaderOptions};
use capnp::traits::HasTypeId;
use capnp_actix::schemas::bench_capnp::bench;
use capnp_actix::schemas::rpc_capnp::{cap_descriptor, message, return_};
use capnp_actix::{Address, SturdyUri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{BoxError, Load, WARM_UP};

/// A framed message and where its question ID sits.
struct Template {
    bytes: Vec<u8>,
    at: usize,
}

impl Template {
    /// Builds the message for two IDs and finds the four bytes that differ.
    fn new(build: impl Fn(u32) -> Vec<u8>) -> Result<Self, BoxError> {
        let (a, b) = (build(0x1111_1111), build(0x2222_2222));
        let at = (0..a.len().saturating_sub(3))
            .find(|&i| a[i..i + 4] == 0x1111_1111u32.to_le_bytes())
            .filter(|&i| b[i..i + 4] == 0x2222_2222u32.to_le_bytes())
            .ok_or("no question ID in the template")?;
        Ok(Template { bytes: a, at })
    }

    fn push(&self, id: u32, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        out[start + self.at..start + self.at + 4].copy_from_slice(&id.to_le_bytes());
    }
}

fn framed(build: impl FnOnce(message::Builder)) -> Vec<u8> {
    let mut m = Builder::new_default();
    build(m.init_root());
    capnp::serialize::write_message_to_words(&m)
}

fn call_template(export: u32) -> Result<Template, BoxError> {
    Template::new(|q| {
        framed(|m| {
            let mut call = m.init_call();
            call.set_question_id(q);
            call.set_interface_id(bench::Client::TYPE_ID);
            call.set_method_id(0);
            call.reborrow().init_target().set_imported_cap(export);
            let mut params = call.init_params();
            params.reborrow().init_cap_table(0);
            params
                .init_content()
                .init_as::<bench::ping_params::Builder>()
                .set_n(7);
        })
    })
}

fn finish_template() -> Result<Template, BoxError> {
    Template::new(|q| framed(|m| m.init_finish().set_question_id(q)))
}

/// Whole frames at the front of `buf`, handed to `each` and drained.
fn frames(
    buf: &mut Vec<u8>,
    mut each: impl FnMut(&[u8]) -> Result<(), BoxError>,
) -> Result<(), BoxError> {
    let mut used = 0;
    loop {
        let rest = &buf[used..];
        if rest.len() < 8 {
            break;
        }
        let segments = u32::from_le_bytes(rest[0..4].try_into()?) as usize + 1;
        let header = (4 + 4 * segments).div_ceil(8) * 8;
        if rest.len() < header {
            break;
        }
        let words: usize = (0..segments)
            .map(|i| {
                u32::from_le_bytes(rest[4 + 4 * i..8 + 4 * i].try_into().unwrap_or_default())
                    as usize
            })
            .sum();
        let len = header + words * 8;
        if rest.len() < len {
            break;
        }
        each(&rest[..len])?;
        used += len;
    }
    buf.drain(..used);
    Ok(())
}

/// What a message from the server is to us.
enum Incoming {
    /// The return of question `id`; for the bootstrap, the export it names.
    Return {
        id: u32,
        export: Option<u32>,
    },
    Other,
}

/// The answer ID of a one-segment `Return` carrying results, read
/// straight from its words (the root `Message` struct's union tag, its
/// first pointer to the `Return`, whose data holds the ID and its own
/// union tag); `None` for anything else, which is parsed in full.
fn quick_return(frame: &[u8]) -> Option<u32> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(frame.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(frame.get(at..at + 4)?.try_into().ok()?));
    let word = |at: usize| Some(u64::from_le_bytes(frame.get(at..at + 8)?.try_into().ok()?));
    if u32_at(0)? != 0 {
        return None;
    }
    // Follows the struct pointer at byte `at`: the byte its data starts
    // at and its data size in bytes.
    let follow = |at: usize| -> Option<(usize, usize)> {
        let p = word(at)?;
        if p & 3 != 0 {
            return None;
        }
        let offset = ((p as u32 as i32) >> 2) as isize;
        let data = ((p >> 32) & 0xffff) as usize * 8;
        let start = (at as isize + 8 + offset * 8) as usize;
        Some((start, data))
    };
    let (message, message_data) = follow(8)?;
    if u16_at(message)? != 3 {
        return None;
    }
    let (ret, _) = follow(message + message_data)?;
    (u16_at(ret + 6)? == 0).then_some(())?;
    u32_at(ret)
}

/// What `frame` is; `quick`: a return of results may be read by
/// [`quick_return`] (without the capability it may carry).
fn parse(mut frame: &[u8], quick: bool) -> Result<Incoming, BoxError> {
    if let Some(id) = quick.then(|| quick_return(frame)).flatten() {
        return Ok(Incoming::Return { id, export: None });
    }
    let reader = capnp::serialize::read_message_from_flat_slice(&mut frame, ReaderOptions::new())?;
    let root: message::Reader = reader.get_root()?;
    let message::Return(r) = root.which()? else {
        return Ok(Incoming::Other);
    };
    let r = r?;
    let export = match r.which()? {
        return_::Results(p) => {
            let table = p?.get_cap_table()?;
            match table.iter().next().map(|d| d.which()) {
                Some(Ok(cap_descriptor::SenderHosted(id))) => Some(id),
                _ => None,
            }
        }
        return_::Exception(e) => {
            return Err(format!("the server failed a call: {}", e?.get_reason()?.to_str()?).into())
        }
        _ => return Err("an unexpected kind of return".into()),
    };
    Ok(Incoming::Return {
        id: r.get_answer_id(),
        export,
    })
}

/// When one connection sends its calls.
#[derive(Clone, Copy)]
pub enum Pace {
    /// A new call as soon as one returns (`in_flight` always in flight).
    Closed,
    /// This many calls per second (at most `in_flight` in flight), sent
    /// every millisecond: an offered load below what the server can do.
    Rate(f64),
}

/// Opens the connection and reads the bootstrap's export ID.
async fn bootstrap(
    path: &std::path::Path,
    buf: &mut Vec<u8>,
) -> Result<(UnixStream, u32), BoxError> {
    let mut socket = UnixStream::connect(path).await?;
    socket
        .write_all(&framed(|m| m.init_bootstrap().set_question_id(0)))
        .await?;
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut export = None;
        frames(buf, |f| {
            if let Incoming::Return { id: 0, export: e } = parse(f, false)? {
                export = Some(e.ok_or("the bootstrap returned no capability")?);
            }
            Ok(())
        })?;
        if let Some(export) = export {
            return Ok((socket, export));
        }
    }
}

/// One connection: the calls it completed in the measured window.
async fn connection(
    path: std::path::PathBuf,
    in_flight: u32,
    pace: Pace,
    from: Instant,
    end: Instant,
) -> Result<u64, BoxError> {
    let mut buf = Vec::new();
    let (socket, export) = bootstrap(&path, &mut buf).await?;
    let (mut rd, mut wr) = socket.into_split();
    let (call, finish) = (call_template(export)?, finish_template()?);
    // The bootstrap's finish keeps the capability it returned (the
    // default would release it, and with it the export the calls target).
    let mut out = framed(|m| {
        let mut f = m.init_finish();
        f.set_question_id(0);
        f.set_release_result_caps(false);
    });
    let mut free: Vec<u32> = (1..=in_flight).rev().collect();
    let mut chunk = vec![0u8; 64 << 10];
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let (mut done, mut owed, mut last) = (0u64, 0.0f64, Instant::now());
    loop {
        let now = Instant::now();
        if now < end {
            let allowed = match pace {
                Pace::Closed => free.len(),
                Pace::Rate(rate) => {
                    owed = (owed + rate * (now - last).as_secs_f64()).min(f64::from(in_flight));
                    owed as usize
                }
            };
            for _ in 0..allowed.min(free.len()) {
                if let Some(q) = free.pop() {
                    call.push(q, &mut out);
                    owed -= 1.0;
                }
            }
        } else if free.len() == in_flight as usize {
            return Ok(done);
        }
        last = now;
        wr.write_all(&out).await?;
        out.clear();
        let n = tokio::select! {
            n = rd.read(&mut chunk) => n?,
            _ = tick.tick(), if matches!(pace, Pace::Rate(_)) => continue,
        };
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let now = Instant::now();
        frames(&mut buf, |f| {
            if let Incoming::Return { id, .. } = parse(f, true)? {
                finish.push(id, &mut out);
                free.push(id);
                if now >= from && now < end {
                    done += 1;
                }
            }
            Ok(())
        })?;
    }
}

/// `load blast`: prints `calls N` for the measured window.
pub async fn run(uri: SturdyUri, load: Load, rate: Option<f64>) -> Result<(), BoxError> {
    let Address::Unix(path) = uri.address else {
        return Err("blast connects to unix: addresses only".into());
    };
    let from = Instant::now() + WARM_UP;
    let end = from + Duration::from_secs(load.seconds);
    let pace = match rate {
        Some(r) => Pace::Rate(r / load.connections.max(1) as f64),
        None => Pace::Closed,
    };
    let tasks: Vec<_> = (0..load.connections)
        .map(|_| {
            actix::spawn(connection(
                path.clone(),
                load.in_flight as u32,
                pace,
                from,
                end,
            ))
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    println!("calls {total}");
    Ok(())
}
