# Cap'n Proto RPC protocol messages (capnp-actix copy).
#
# Wire-compatible with the upstream `capnp/rpc.capnp` (same file id, type
# names, ordinals, types and defaults, hence the same type ids). Written
# independently for this project; language-specific annotations are omitted
# because they do not affect the encoding.

@0xb312981b2552a250;

# Identifier aliases (no effect on the encoding; all are 32-bit integers).
using QuestionId = UInt32;  # id of a question, chosen by the asking side
using AnswerId = QuestionId;  # same id, seen from the answering side
using ExportId = UInt32;  # id of a capability in the sender's export table
using ImportId = ExportId;  # same id, seen from the receiving side

# One RPC message; exactly one variant is set.
struct Message {
  union {
    unimplemented @0 :Message;  # echo of a message the peer could not handle
    abort @1 :Exception;  # fatal error, connection is being closed
    bootstrap @8 :Bootstrap;  # ask for the peer's bootstrap capability
    call @2 :Call;  # invoke a method
    return @3 :Return;  # answer to a call or bootstrap
    finish @4 :Finish;  # caller is done with a question
    resolve @5 :Resolve;  # a promise export has settled
    release @6 :Release;  # drop references to an import
    disembargo @13 :Disembargo;  # embargo handling for promise resolution
    obsoleteSave @7 :AnyPointer;  # retired, never sent
    obsoleteDelete @9 :AnyPointer;  # retired, never sent
    provide @10 :Provide;  # level 3: offer a capability to a third party
    accept @11 :Accept;  # level 3: pick up a provided capability
    join @12 :Join;  # level 4: part of a join request
  }
}

# Request for the peer's bootstrap interface.
struct Bootstrap {
  questionId @0 :QuestionId;  # question answered by the matching Return
  deprecatedObjectId @1 :AnyPointer;  # legacy named-object lookup, unused
}

# A method invocation.
struct Call {
  questionId @0 :QuestionId;  # question this call creates
  target @1 :MessageTarget;  # object receiving the call
  interfaceId @2 :UInt64;  # type id of the interface declaring the method
  methodId @3 :UInt16;  # method ordinal within that interface
  allowThirdPartyTailCall @8 :Bool = false;  # level 3 tail-call permission
  noPromisePipelining @9 :Bool = false;  # caller will not pipeline on results
  onlyPromisePipeline @10 :Bool = false;  # caller only wants pipelining, not results
  params @4 :Payload;  # call arguments
  # Where the results should go.
  sendResultsTo :union {
    caller @5 :Void;  # back to the caller (normal case)
    yourself @6 :Void;  # kept by the callee (tail call)
    thirdParty @7 :RecipientId;  # level 3: to another vat
  }
}

# Completion of a question.
struct Return {
  answerId @0 :AnswerId;  # question being answered
  releaseParamCaps @1 :Bool = true;  # callee releases the caps in the params
  noFinishNeeded @8 :Bool = false;  # callee needs no Finish for this answer
  union {
    results @2 :Payload;  # success
    exception @3 :Exception;  # failure
    canceled @4 :Void;  # cancelled after a Finish
    resultsSentElsewhere @5 :Void;  # results went where sendResultsTo said
    takeFromOtherQuestion @6 :QuestionId;  # results equal another question's
    acceptFromThirdParty @7 :ThirdPartyCapId;  # level 3: fetch from a third party
  }
}

# Caller is done with a question and its answer.
struct Finish {
  questionId @0 :QuestionId;  # question being finished
  releaseResultCaps @1 :Bool = true;  # release caps in the results not yet used
  requireEarlyCancellationWorkaround @2 :Bool = true;  # peer may need legacy cancellation handling
}

# A promise the sender exported has resolved.
struct Resolve {
  promiseId @0 :ExportId;  # export id of the promise
  union {
    cap @1 :CapDescriptor;  # it resolved to this capability
    exception @2 :Exception;  # it broke
  }
}

# Decrement the reference count of an import.
struct Release {
  id @0 :ImportId;  # import being released
  referenceCount @1 :UInt32;  # how many references to drop
}

# Embargo message used to keep call ordering across promise resolution.
struct Disembargo {
  target @0 :MessageTarget;  # capability the embargo concerns

  using EmbargoId = UInt32;  # id of an embargo, chosen by the sender

  # Role of this message in the embargo handshake.
  context :union {
    senderLoopback @1 :EmbargoId;  # request: reflect this back to me
    receiverLoopback @2 :EmbargoId;  # reply: reflected loopback
    accept @3 :Void;  # level 3: embargo on an Accept
    provide @4 :QuestionId;  # level 3: embargo on a Provide
  }
}

# Level 3: make a capability available to a given third party.
struct Provide {
  questionId @0 :QuestionId;  # question tracking the provision
  target @1 :MessageTarget;  # capability being provided
  recipient @2 :RecipientId;  # vat allowed to pick it up
}

# Level 3: pick up a capability provided by another vat.
struct Accept {
  questionId @0 :QuestionId;  # question answered with the capability
  provision @1 :ProvisionId;  # which provision to accept
  embargo @2 :Bool;  # hold calls until a Disembargo arrives
}

# Level 4: one part of a join request.
struct Join {
  questionId @0 :QuestionId;  # question answered with the joined capability
  target @1 :MessageTarget;  # capability being joined
  keyPart @2 :JoinKeyPart;  # this part of the join key
}

# Addressee of a call or other message.
struct MessageTarget {
  union {
    importedCap @0 :ImportId;  # a capability the receiver exported
    promisedAnswer @1 :PromisedAnswer;  # a capability inside a pending answer
  }
}

# Content plus the capabilities it refers to.
struct Payload {
  content @0 :AnyPointer;  # the actual params or results
  capTable @1 :List(CapDescriptor);  # capabilities indexed by the content
}

# How a capability is transmitted.
struct CapDescriptor {
  union {
    none @0 :Void;  # null capability
    senderHosted @1 :ExportId;  # new or existing export of the sender
    senderPromise @2 :ExportId;  # export of the sender that is a promise
    receiverHosted @3 :ImportId;  # capability the receiver itself exported
    receiverAnswer @4 :PromisedAnswer;  # capability inside a receiver's answer
    thirdPartyHosted @5 :ThirdPartyCapDescriptor;  # level 3: lives in a third vat
  }
  attachedFd @6 :UInt8 = 0xff;  # index of an attached file descriptor, 0xff for none
}

# Reference to a capability within a not-yet-returned answer.
struct PromisedAnswer {
  questionId @0 :QuestionId;  # question whose answer is referenced
  transform @1 :List(Op);  # path from the results root to the capability

  # One step of the path.
  struct Op {
    union {
      noop @0 :Void;  # no-op, ignored
      getPointerField @1 :UInt16;  # follow this pointer field of a struct
    }
  }
}

# Level 3: capability hosted by a third vat.
struct ThirdPartyCapDescriptor {
  id @0 :ThirdPartyCapId;  # how to reach the capability
  vineId @1 :ExportId;  # sender-side proxy to use until connected
}

# Error description carried by Abort, Return and Resolve.
struct Exception {
  reason @0 :Text;  # human-readable message
  type @3 :Type;  # error category

  # Error categories.
  enum Type {
    failed @0;  # generic failure
    overloaded @1;  # temporary lack of resources
    disconnected @2;  # the connection or object went away
    unimplemented @3;  # method or feature not supported
  }

  obsoleteIsCallersFault @1 :Bool;  # retired
  obsoleteDurability @2 :UInt16;  # retired
  trace @4 :Text;  # optional stack trace, for debugging
}

# Network-specific types, left open here (see rpc-twoparty.capnp).
using SturdyRef = AnyPointer;  # persistent capability reference
using ProvisionId = AnyPointer;  # level 3 provision identifier
using RecipientId = AnyPointer;  # level 3 recipient identifier
using ThirdPartyCapId = AnyPointer;  # level 3 third-party capability id
using JoinKeyPart = AnyPointer;  # level 4 join key part
using JoinResult = AnyPointer;  # level 4 join result
