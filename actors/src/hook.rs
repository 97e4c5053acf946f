//! The bridge to capnpc-generated code: our implementations of capnp's hook
//! traits (`ClientHook`, `RequestHook`, ...), and the conversion between the
//! `!Send` hook tables that generated code reads and writes and the `Send`
//! cap tables that cross mailboxes. Reading a payload or shared results
//! through such a table (its root, the capability at a pipeline path) and
//! copying a reader into a new payload are here too, as methods on
//! `Payload` and `Frozen`: `payload.rs` itself knows nothing of hooks.
//!
//! Capabilities of other runtimes ("foreign hooks", such as those the
//! capnp-rpc crate's `new_client` makes) cross here too: a foreign hook is
//! `!Send` and stays on its thread, served there by a proxy actor
//! ([`ForeignHost`]) so that the capability can travel like any other; the
//! same hook always gets the same proxy, and on its own thread the proxy
//! turns back into the original hook. They are in this file because the
//! conversion and the proxy need each other (a hook table becomes handles
//! by making proxies; a proxy copies results back into payloads).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::thread::ThreadId;

use capnp::capability::{Promise, RemotePromise, Request, Response};
use capnp::message::{self, HeapAllocator};
use capnp::private::capability::{
    ClientHook, ParamsHook, PipelineHook, PipelineOp, RequestHook, ResponseHook, ResultsHook,
};
use capnp::traits::{Imbue, ImbueMut};
use capnp::{any_pointer, MessageSize};
use capnp_actix_proto::captp::InContent;
use futures::future::{select, Either};
use futures::FutureExt;

use crate::answer::{Answer, AnswerRef, Outcome};
use crate::call::{Call, Completer};
use crate::cap::{next_id, CapRef, Kind, Node};
use crate::error;
use crate::host::{spawn_host_with, CallBody, Host, ResultsSlot};
use crate::payload::{Body, Frozen, HookTable, Payload, SendCapTable};

static BRAND: u8 = 0;

/// First segment size of the messages we build for calls and results.
/// capnp's default (1024 words) zeroes 8 KiB per message, which dominated
/// the cost of a small local call; larger messages grow by more segments.
const FIRST_SEGMENT_WORDS: u32 = 64;

/// The brand of our hooks: the address of a static, which no other
/// runtime's hook can report (theirs are 0 or heap addresses).
pub(crate) fn brand() -> usize {
    &BRAND as *const u8 as usize
}

/// Our `ClientHook`: a capability handle seen by generated code.
pub(crate) struct CapHook {
    pub(crate) cap: CapRef,
}

/// Our capability inside a hook made by this runtime, if it is one.
#[allow(unsafe_code)]
pub(crate) fn our_cap(hook: &dyn ClientHook) -> Option<&CapRef> {
    if hook.get_brand() != brand() {
        return None;
    }
    // SAFETY: only `CapHook` reports `brand()` (a private static's address
    // that no other hook can return), so this `dyn ClientHook` is a
    // `CapHook`; the reference keeps the lifetime of `hook`. Tested by
    // `hook::tests::our_cap_round_trips_and_rejects_foreign_hooks`.
    Some(unsafe { &(*(hook as *const dyn ClientHook as *const CapHook)).cap })
}

/// Our request inside a request hook made by this runtime, if it is one.
#[allow(unsafe_code)]
fn our_request(request: &dyn RequestHook) -> Option<&OutgoingRequest> {
    if request.get_brand() != brand() {
        return None;
    }
    // SAFETY: only `OutgoingRequest` reports `brand()` among request hooks
    // (see `our_cap`). Tested by `tail_call_on_own_answer_is_a_cycle` in
    // tests/local_scenarios.rs, which goes through this path.
    Some(unsafe { &*(request as *const dyn RequestHook as *const OutgoingRequest) })
}

/// Our request itself, taken out of a request hook made by this runtime;
/// any other request hook is given back.
#[allow(unsafe_code)]
fn into_our_request(
    request: Box<dyn RequestHook>,
) -> Result<Box<OutgoingRequest>, Box<dyn RequestHook>> {
    if request.get_brand() != brand() {
        return Err(request);
    }
    // SAFETY: only `OutgoingRequest` reports `brand()` among request hooks
    // (see `our_cap`), so the box holds an `OutgoingRequest`; the pointer
    // comes from `Box::into_raw` of that same allocation, and the vtable
    // part of the fat pointer is dropped. Tested by the tail-call tests in
    // tests/local_scenarios.rs and tests/tail_calls.rs, which go through
    // this path.
    Ok(unsafe { Box::from_raw(Box::into_raw(request) as *mut OutgoingRequest) })
}

/// Sends a tail call made by the method answering `answer`, and returns
/// the tail call's answer. When the method serves a peer's call and the
/// tail call goes to that same peer, it goes out with
/// `sendResultsTo.yourself`: the results never come through us.
fn send_tail_call(answer: &Arc<Answer>, request: OutgoingRequest) -> AnswerRef {
    let (target, interface_id, method_id, params) = request.into_call_parts();
    if let Some(crate::answer::Origin {
        conn,
        conn_id,
        answer_id,
    }) = answer.origin()
    {
        let end = target.shortened();
        if let Kind::Remote {
            conn_id: target_conn,
            import,
            ..
        } = end.kind()
        {
            if *target_conn == conn_id {
                if let Some(resolvable) = &end.node.resolvable {
                    resolvable.mark_called();
                }
                let (tail, completer) = Answer::open();
                tail.shared().set_remote(conn.clone(), conn_id);
                conn.do_send(crate::call::ConnMsg::TailCall {
                    answer: answer_id,
                    import: *import,
                    call: Call {
                        interface_id,
                        method_id,
                        params,
                        completer,
                        marker: None,
                    },
                });
                return tail;
            }
        }
    }
    send_call(&target, interface_id, method_id, params)
}

/// Turns a hook into a sendable capability handle, keeping identity: our
/// own hooks give back their capability; other runtimes' hooks get a proxy
/// (the same proxy for the same hook).
pub(crate) fn to_cap(hook: Box<dyn ClientHook>) -> CapRef {
    match our_cap(hook.as_ref()) {
        Some(c) => c.clone(),
        None => wrap(hook),
    }
}

/// Turns a handle into a hook for generated code on this thread. A proxy
/// for a foreign hook gives back the original hook on its own thread.
pub(crate) fn to_hook(cap: &CapRef) -> Box<dyn ClientHook> {
    if let Kind::Foreign { thread, key, .. } = cap.kind() {
        if let Some(h) = original(*thread, *key) {
            return h;
        }
    }
    Box::new(CapHook { cap: cap.clone() })
}

pub(crate) fn to_hooks(caps: &SendCapTable) -> HookTable {
    caps.iter().map(|c| c.as_ref().map(to_hook)).collect()
}

pub(crate) fn to_caps(table: HookTable) -> SendCapTable {
    table.into_iter().map(|h| h.map(to_cap)).collect()
}

/// Sends a call to `target` and returns the caller's reference to its answer.
pub(crate) fn send_call(
    target: &CapRef,
    interface_id: u64,
    method_id: u16,
    params: Payload,
) -> AnswerRef {
    let (answer, completer) = Answer::open();
    target.deliver(Call {
        interface_id,
        method_id,
        params,
        completer,
        marker: None,
    });
    answer
}

/// Payloads read through hook tables: generated code and capnp's readers
/// see capabilities only as hooks.
impl Payload {
    /// Reads the root pointer with the cap table turned into hooks that live
    /// on the current thread.
    pub(crate) fn with_root<R>(
        &self,
        f: impl FnOnce(any_pointer::Reader<'_>) -> capnp::Result<R>,
    ) -> capnp::Result<R> {
        let table = to_hooks(&self.caps);
        let mut root: any_pointer::Reader<'_> = self.body.root()?;
        root.imbue(&table);
        f(root)
    }

    /// The capability at a pipeline path, read from this payload.
    pub(crate) fn cap_at(&self, path: &[u16]) -> CapRef {
        let ops: Vec<PipelineOp> = path
            .iter()
            .map(|&i| PipelineOp::GetPointerField(i))
            .collect();
        match self.with_root(|root| root.get_pipelined_cap(&ops)) {
            Ok(h) => to_cap(h),
            Err(e) => CapRef::broken(e),
        }
    }
}

/// Shared results read through hook tables.
impl Frozen {
    /// The capability at a pipeline path (pointer field indexes from the
    /// root), or a broken capability saying why there is none.
    pub(crate) fn cap_at(&self, path: &[u16]) -> CapRef {
        let table = to_hooks(&self.caps);
        let ops: Vec<PipelineOp> = path
            .iter()
            .map(|&i| PipelineOp::GetPointerField(i))
            .collect();
        let found = self
            .root(&table)
            .and_then(|root| root.get_pipelined_cap(&ops));
        match found {
            Ok(h) => to_cap(h),
            Err(e) => CapRef::broken(e),
        }
    }

    /// Copies the message into a fresh builder (for handing results to a
    /// foreign `ResultsHook`, or for re-sending).
    pub(crate) fn copy_into(&self, mut dest: any_pointer::Builder<'_>) -> capnp::Result<()> {
        let table = to_hooks(&self.caps);
        dest.set_as(self.root(&table)?)
    }
}

/// A received payload with its capabilities already turned into handles
/// (`caps`, indexed as the wire cap table): kept in place when its content
/// carries no capability (nothing to renumber), otherwise copied as
/// [`payload_from_reader`] does, so that cap tables stay as they were.
pub(crate) fn payload_received(
    content: InContent,
    caps: SendCapTable,
    size: MessageSize,
) -> capnp::Result<Payload> {
    if size.cap_count == 0 {
        // The content refers to none of `caps` (if the peer sent any, they
        // are released as they would be after a copy).
        drop(caps);
        return Ok(Payload {
            body: Body::Received(content),
            caps: Vec::new(),
        });
    }
    let table = to_hooks(&caps);
    let mut root = content.content()?;
    root.imbue(&table);
    payload_from_reader(root)
}

/// Copies `src` (a reader imbued with hooks) into a new payload, turning the
/// capabilities it carries into sendable handles.
pub(crate) fn payload_from_reader(src: any_pointer::Reader<'_>) -> capnp::Result<Payload> {
    let size = src.target_size()?;
    let mut message = message::Builder::new(
        HeapAllocator::new()
            .first_segment_words((size.word_count as u32).saturating_add(1).min(1 << 20)),
    );
    let mut table: HookTable = Vec::new();
    {
        let mut root: any_pointer::Builder<'_> = message.init_root();
        root.imbue_mut(&mut table);
        root.set_as(src)?;
    }
    Ok(Payload::built(message, to_caps(table)))
}

impl ClientHook for CapHook {
    fn add_ref(&self) -> Box<dyn ClientHook> {
        Box::new(CapHook {
            cap: self.cap.clone(),
        })
    }

    fn new_call(
        &self,
        interface_id: u64,
        method_id: u16,
        size_hint: Option<MessageSize>,
    ) -> Request<any_pointer::Owned, any_pointer::Owned> {
        Request::new(Box::new(OutgoingRequest::new(
            self.cap.clone(),
            interface_id,
            method_id,
            size_hint,
        )))
    }

    fn call(
        &self,
        interface_id: u64,
        method_id: u16,
        params: Box<dyn ParamsHook>,
        mut results: Box<dyn ResultsHook>,
    ) -> Promise<(), capnp::Error> {
        // Another runtime (or a forwarding server) calls us with its own
        // params and results: copy in, call, copy out.
        let payload = match params.get().and_then(payload_from_reader) {
            Ok(p) => p,
            Err(e) => return Promise::err(e),
        };
        drop(params);
        let answer = send_call(&self.cap, interface_id, method_id, payload);
        Promise::from_future(async move {
            let frozen = WaitOutcome { answer }.await?;
            frozen.copy_into(results.get()?)
        })
    }

    fn get_brand(&self) -> usize {
        brand()
    }

    fn get_ptr(&self) -> usize {
        Arc::as_ptr(&self.cap.node) as usize
    }

    fn get_resolved(&self) -> Option<Box<dyn ClientHook>> {
        self.cap.resolved().map(|c| to_hook(&c))
    }

    fn when_more_resolved(&self) -> Option<Promise<Box<dyn ClientHook>, capnp::Error>> {
        if !self.cap.is_promise() {
            return None;
        }
        let cap = self.cap.clone();
        Some(Promise::from_future(async move {
            cap.when_resolved().await?;
            Ok(to_hook(&cap.resolved().unwrap_or(cap)))
        }))
    }

    fn when_resolved(&self) -> Promise<(), capnp::Error> {
        Promise::from_future(self.cap.when_resolved())
    }
}

/// Waits for an answer's outcome.
pub(crate) struct WaitOutcome {
    pub(crate) answer: AnswerRef,
}

impl Future for WaitOutcome {
    type Output = Outcome;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        self.answer.poll_outcome(cx)
    }
}

/// A call being built by generated code.
pub(crate) struct OutgoingRequest {
    target: CapRef,
    interface_id: u64,
    method_id: u16,
    message: message::Builder<HeapAllocator>,
    table: HookTable,
}

impl OutgoingRequest {
    pub(crate) fn new(
        target: CapRef,
        interface_id: u64,
        method_id: u16,
        size_hint: Option<MessageSize>,
    ) -> Self {
        let alloc = match size_hint {
            Some(s) => HeapAllocator::new()
                .first_segment_words((s.word_count as u32).saturating_add(1).min(1 << 20)),
            // Generated `*_request()` methods give no hint: capnp's default
            // first segment (1024 words) would be zeroed in full per call.
            None => HeapAllocator::new().first_segment_words(FIRST_SEGMENT_WORDS),
        };
        let mut message = message::Builder::new(alloc);
        message.init_root::<any_pointer::Builder<'_>>();
        OutgoingRequest {
            target,
            interface_id,
            method_id,
            message,
            table: Vec::new(),
        }
    }

    fn into_call_parts(self) -> (CapRef, u64, u16, Payload) {
        let payload = Payload::built(self.message, to_caps(self.table));
        (self.target, self.interface_id, self.method_id, payload)
    }
}

impl RequestHook for OutgoingRequest {
    fn get(&mut self) -> any_pointer::Builder<'_> {
        // The root was initialised in `new`, so this cannot fail.
        let mut root: any_pointer::Builder<'_> = self
            .message
            .get_root()
            .expect("request root initialised at construction");
        root.imbue_mut(&mut self.table);
        root
    }

    fn get_brand(&self) -> usize {
        brand()
    }

    fn send(self: Box<Self>) -> RemotePromise<any_pointer::Owned> {
        let (target, iid, mid, payload) = self.into_call_parts();
        // After a failed stream, the capability fails every call with the
        // stream's error (`stream.rs`), the call ending the stream too.
        let answer = match target.stream_failure() {
            Some(error) => {
                let (answer, completer) = Answer::open();
                completer.complete(Err(error));
                answer
            }
            None => send_call(&target, iid, mid, payload),
        };
        let pipeline = any_pointer::Pipeline::new(Box::new(AnswerPipeline {
            answer: answer.clone(),
        }));
        let promise = Promise::from_future(WaitOutcome { answer }.map(|o| {
            o.map(|frozen| {
                Response::new(Box::new(LocalResponse::new(frozen)) as Box<dyn ResponseHook>)
            })
        }));
        RemotePromise { promise, pipeline }
    }

    /// Sends a call to a `-> stream` method under its capability's flow
    /// control (`stream.rs`): the call leaves now; the promise resolves
    /// when the window has room for the next one.
    fn send_streaming(self: Box<Self>) -> Promise<(), capnp::Error> {
        let bytes = self.message.size_in_words().saturating_mul(8);
        let (target, iid, mid, payload) = self.into_call_parts();
        let flow = target.stream_flow().clone();
        if let Some(error) = flow.failure() {
            return Promise::err(error);
        }
        let answer = send_call(&target, iid, mid, payload);
        let sent_at = std::time::Instant::now();
        flow.sent(bytes, sent_at);
        let ready = flow.ready();
        actix_rt::spawn(async move {
            let error = WaitOutcome { answer }.await.err();
            flow.returned(bytes, sent_at, std::time::Instant::now(), error);
        });
        ready
    }

    fn tail_send(
        self: Box<Self>,
    ) -> Option<(u32, Promise<(), capnp::Error>, Box<dyn PipelineHook>)> {
        None
    }
}

/// The results of a call, as the caller reads them.
pub(crate) struct LocalResponse {
    frozen: Arc<Frozen>,
    table: HookTable,
}

impl LocalResponse {
    pub(crate) fn new(frozen: Arc<Frozen>) -> Self {
        let table = to_hooks(&frozen.caps);
        LocalResponse { frozen, table }
    }
}

impl ResponseHook for LocalResponse {
    fn get(&self) -> capnp::Result<any_pointer::Reader<'_>> {
        self.frozen.root(&self.table)
    }
}

/// The pipeline of a sent call.
pub(crate) struct AnswerPipeline {
    pub(crate) answer: AnswerRef,
}

impl AnswerPipeline {
    /// A pipeline whose every field is broken with `error`.
    fn broken(error: capnp::Error) -> Box<dyn PipelineHook> {
        let (answer, completer) = Answer::open();
        completer.complete(Err(error));
        Box::new(AnswerPipeline { answer })
    }
}

impl PipelineHook for AnswerPipeline {
    fn add_ref(&self) -> Box<dyn PipelineHook> {
        Box::new(AnswerPipeline {
            answer: self.answer.clone(),
        })
    }

    fn get_pipelined_cap(&self, ops: &[PipelineOp]) -> Box<dyn ClientHook> {
        let path = ops
            .iter()
            .filter_map(|op| match op {
                PipelineOp::Noop => None,
                PipelineOp::GetPointerField(i) => Some(*i),
            })
            .collect();
        to_hook(&self.answer.pipelined_cap(path))
    }
}

/// The parameters of a call, as the method reads them.
pub(crate) struct LocalParams {
    message: Body,
    table: HookTable,
}

impl LocalParams {
    pub(crate) fn new(payload: Payload) -> Self {
        let table = to_hooks(&payload.caps);
        // The sendable handles are no longer needed: the hooks hold the
        // capabilities now.
        LocalParams {
            message: payload.body,
            table,
        }
    }
}

impl ParamsHook for LocalParams {
    fn get(&self) -> capnp::Result<any_pointer::Reader<'_>> {
        let mut root: any_pointer::Reader<'_> = self.message.root()?;
        root.imbue(&self.table);
        Ok(root)
    }
}

/// What a method serving a call is given: its params (read from the
/// call's `params`), its results (whose pipeline is `completer`'s answer),
/// and the slot the results land in when the method drops them.
pub(crate) fn method_io(
    params: Payload,
    completer: &Completer,
) -> (
    capnp::capability::Params<any_pointer::Owned>,
    capnp::capability::Results<any_pointer::Owned>,
    ResultsSlot,
) {
    let slot: ResultsSlot = std::rc::Rc::new(RefCell::new(None));
    let results = LocalResults::new(completer.answer().cloned(), slot.clone());
    (
        capnp::capability::Params::new(Box::new(LocalParams::new(params))),
        capnp::capability::Results::new(Box::new(results)),
        slot,
    )
}

/// The results of a call, as the method writes them.
pub(crate) struct LocalResults {
    message: Option<message::Builder<HeapAllocator>>,
    table: HookTable,
    answer: Option<Arc<Answer>>,
    slot: ResultsSlot,
}

impl LocalResults {
    pub(crate) fn new(answer: Option<Arc<Answer>>, slot: ResultsSlot) -> Self {
        let mut message =
            message::Builder::new(HeapAllocator::new().first_segment_words(FIRST_SEGMENT_WORDS));
        message.init_root::<any_pointer::Builder<'_>>();
        LocalResults {
            message: Some(message),
            table: Vec::new(),
            answer,
            slot,
        }
    }

    /// A tail call to a field of this call's own answer would wait for
    /// itself for ever.
    fn depends_on_self(&self, request: &dyn RequestHook) -> bool {
        match (our_request(request), &self.answer) {
            (Some(r), Some(a)) => {
                let target = r.target.shortened();
                a.path_on_self(&target).is_some()
            }
            _ => false,
        }
    }

    fn payload_copy(&mut self) -> capnp::Result<Payload> {
        let Some(m) = &self.message else {
            return Err(crate::error::internal("results already taken"));
        };
        let mut root: any_pointer::Reader<'_> = m.get_root_as_reader()?;
        root.imbue(&self.table);
        payload_from_reader(root)
    }
}

impl Drop for LocalResults {
    fn drop(&mut self) {
        if let Some(message) = self.message.take() {
            *self.slot.borrow_mut() = Some(Payload::built(
                message,
                to_caps(std::mem::take(&mut self.table)),
            ));
        }
    }
}

impl ResultsHook for LocalResults {
    fn get(&mut self) -> capnp::Result<any_pointer::Builder<'_>> {
        let Some(m) = self.message.as_mut() else {
            return Err(crate::error::internal("results already taken"));
        };
        let mut root: any_pointer::Builder<'_> = m.get_root()?;
        root.imbue_mut(&mut self.table);
        Ok(root)
    }

    fn set_pipeline(&mut self) -> capnp::Result<()> {
        let payload = self.payload_copy()?;
        if let Some(a) = &self.answer {
            a.set_pipeline(payload);
        }
        Ok(())
    }

    fn allow_cancellation(&self) {
        // Calls are cancellable by default in this runtime (see the crate
        // docs); `shield` opts out.
    }

    fn tail_call(mut self: Box<Self>, request: Box<dyn RequestHook>) -> Promise<(), capnp::Error> {
        if self.depends_on_self(request.as_ref()) {
            return Promise::err(crate::error::cycle());
        }
        let request = match (into_our_request(request), self.answer.clone()) {
            (Ok(ours), Some(answer)) => {
                // Our answer becomes the tail call's: nothing is copied, and
                // what this method returns from now on is ignored.
                answer.forward_to(send_tail_call(&answer, *ours));
                return Promise::ok(());
            }
            (Ok(ours), None) => ours as Box<dyn RequestHook>,
            (Err(other), _) => other,
        };
        let remote = request.send();
        Promise::from_future(async move {
            let response = remote.promise.await?;
            self.get()?.set_as(response.get()?)?;
            Ok(())
        })
    }

    fn direct_tail_call(
        mut self: Box<Self>,
        request: Box<dyn RequestHook>,
    ) -> (Promise<(), capnp::Error>, Box<dyn PipelineHook>) {
        if self.depends_on_self(request.as_ref()) {
            let p = AnswerPipeline::broken(crate::error::cycle());
            return (Promise::err(crate::error::cycle()), p);
        }
        let request = match (into_our_request(request), self.answer.clone()) {
            (Ok(ours), Some(answer)) => {
                let tail = send_tail_call(&answer, *ours);
                let pipeline = Box::new(AnswerPipeline {
                    answer: tail.clone(),
                });
                answer.forward_to(tail);
                return (Promise::ok(()), pipeline);
            }
            (Ok(ours), None) => ours as Box<dyn RequestHook>,
            (Err(other), _) => other,
        };
        let remote = request.send();
        let pipeline = remote.pipeline.hook;
        let promise = remote.promise;
        (
            Promise::from_future(async move {
                let response = promise.await?;
                self.get()?.set_as(response.get()?)?;
                Ok(())
            }),
            pipeline,
        )
    }
}

// Capabilities of other runtimes ("foreign hooks"), such as those the
// capnp-rpc crate's `new_client` makes. A foreign hook is `!Send` and stays
// on the thread it was made on. It is served there by a proxy actor, so
// that the capability can travel like any other. Identity is kept: the same
// hook always gets the same proxy, and on its own thread the proxy turns
// back into the original hook.

/// The proxy of one foreign hook.
struct Proxy {
    /// The proxy capability's node, while anyone holds it.
    node: Weak<Node>,
    /// The original hook, handed back on its own thread.
    original: Box<dyn ClientHook>,
}

/// Proxies by hook identity (`get_ptr`).
type ProxyTable = HashMap<usize, Proxy>;

thread_local! {
    /// Foreign hooks of this thread that have a proxy: hook identity
    /// (`get_ptr`) to the proxy's node and the original hook.
    static PROXIES: RefCell<ProxyTable> = RefCell::new(HashMap::new());
}

/// The proxy capability for a foreign hook (made on first use).
fn wrap(hook: Box<dyn ClientHook>) -> CapRef {
    let key = hook.get_ptr();
    if let Some(node) =
        PROXIES.with(|p| p.borrow().get(&key).and_then(|proxy| proxy.node.upgrade()))
    {
        return CapRef { node };
    }
    let id = next_id();
    let original = hook.add_ref();
    let cap = spawn_host_with(ForeignHost { hook, key, id }, id, |proxy| Kind::Foreign {
        proxy,
        thread: std::thread::current().id(),
        key,
    });
    PROXIES.with(|p| {
        p.borrow_mut().insert(
            key,
            Proxy {
                node: Arc::downgrade(&cap.node),
                original,
            },
        )
    });
    cap
}

/// On the hook's own thread, the original hook behind a proxy.
fn original(thread: ThreadId, key: usize) -> Option<Box<dyn ClientHook>> {
    if std::thread::current().id() != thread {
        return None;
    }
    PROXIES.with(|p| p.borrow().get(&key).map(|proxy| proxy.original.add_ref()))
}

/// Serves calls by making them on the foreign hook.
pub(crate) struct ForeignHost {
    hook: Box<dyn ClientHook>,
    key: usize,
    id: u64,
}

impl Drop for ForeignHost {
    fn drop(&mut self) {
        // Forget the mapping, unless a newer proxy for the same hook has
        // replaced it already.
        let (key, id) = (self.key, self.id);
        let _ = PROXIES.try_with(|p| {
            let mut p = p.borrow_mut();
            let ours = p
                .get(&key)
                .is_some_and(|proxy| proxy.node.upgrade().is_none_or(|n| n.id == id));
            if ours {
                p.remove(&key);
            }
        });
    }
}

impl Host for ForeignHost {
    fn dispatch(&self, call: Call) -> CallBody {
        let Call {
            interface_id,
            method_id,
            params,
            completer,
            ..
        } = call;
        let mut request = self.hook.new_call(interface_id, method_id, None);
        let copied = params.with_root(|root| request.hook.get().set_as(root));
        drop(params);
        if let Err(e) = copied {
            completer.complete(Err(e));
            return CallBody::Done(futures::future::ready(()).boxed_local());
        }
        let promise = request.hook.send().promise;
        CallBody::Done(
            async move {
                let cancelled = completer.cancelled();
                match select(promise, cancelled).await {
                    Either::Left((Ok(response), _)) => {
                        match response.hook.get().and_then(payload_from_reader) {
                            Ok(p) => completer.complete_payload(p),
                            Err(e) => completer.complete(Err(e)),
                        }
                    }
                    Either::Left((Err(e), _)) => completer.complete(Err(e)),
                    Either::Right(((), _)) => completer.complete(Err(error::cancelled())),
                }
            }
            .boxed_local(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Other;
    impl ClientHook for Other {
        fn add_ref(&self) -> Box<dyn ClientHook> {
            Box::new(Other)
        }
        fn new_call(
            &self,
            _: u64,
            _: u16,
            _: Option<MessageSize>,
        ) -> Request<any_pointer::Owned, any_pointer::Owned> {
            unimplemented!()
        }
        fn call(
            &self,
            _: u64,
            _: u16,
            _: Box<dyn ParamsHook>,
            _: Box<dyn ResultsHook>,
        ) -> Promise<(), capnp::Error> {
            unimplemented!()
        }
        fn get_brand(&self) -> usize {
            0
        }
        fn get_ptr(&self) -> usize {
            7
        }
        fn get_resolved(&self) -> Option<Box<dyn ClientHook>> {
            None
        }
        fn when_more_resolved(&self) -> Option<Promise<Box<dyn ClientHook>, capnp::Error>> {
            None
        }
        fn when_resolved(&self) -> Promise<(), capnp::Error> {
            Promise::ok(())
        }
    }

    #[test]
    fn our_cap_round_trips_and_rejects_foreign_hooks() {
        let cap = CapRef::broken(capnp::Error::failed("x".into()));
        let hook: Box<dyn ClientHook> = Box::new(CapHook { cap: cap.clone() });
        assert_eq!(our_cap(hook.as_ref()), Some(&cap));
        assert_eq!(
            our_cap(hook.add_ref().as_ref()).map(CapRef::id),
            Some(cap.id())
        );
        assert!(our_cap(&Other).is_none());
    }
}
