# Network-specific types for a two-party (client/server) RPC connection
# (capnp-actix copy).
#
# Wire-compatible with the upstream `capnp/rpc-twoparty.capnp`. Written
# independently for this project; language-specific annotations are omitted.

@0xa184c7885cdaf2a1;

# Which end of the connection a vat is.
enum Side {
  server @0;  # the accepting side
  client @1;  # the connecting side
}

# Identity of a vat in a two-party network.
struct VatId {
  side @0 :Side;  # the vat's side
}

# Provision identifier (level 3, only used by joins here).
struct ProvisionId {
  joinId @0 :UInt32;  # id of the join this provision belongs to
}

# Recipient identifier; unused with only two parties.
struct RecipientId {}

# Third-party capability id; unused with only two parties.
struct ThirdPartyCapId {}

# Level 4: one part of a join key.
struct JoinKeyPart {
  joinId @0 :UInt32;  # id of the join, chosen by the client
  partCount @1 :UInt16;  # total number of parts
  partNum @2 :UInt16;  # index of this part
}

# Level 4: result of one join part.
struct JoinResult {
  joinId @0 :UInt32;  # id of the join
  succeeded @1 :Bool;  # whether the join matched
  cap @2 :Capability;  # the joined capability, set on one part only
}
