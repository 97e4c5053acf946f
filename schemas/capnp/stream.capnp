@0x86c366a91393f3f8;
# Our copy of the standard `/capnp/stream.capnp`, which schemas with
# `-> stream` methods import (files.capnp). Only the IDs matter: a method
# declared `-> stream` returns this empty struct on the wire, and capnpc
# recognises it by its ID to generate streaming client and server code.
# `schemas/` is on the import path, so `/capnp/stream.capnp` finds this
# file and nothing from the machine's `/usr/include` is needed.

struct StreamResult @0x995f9a3377c0b16e {
  # The results of every streaming call: empty.
}
