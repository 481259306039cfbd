// Forwarding header: ByteReader and ByteWriter moved to lib/base/byte_io.h (one bounds-checked
// reader for lib/wire, lib/disco and lib/net). Kept only so includes added on other branches while
// the move landed keep compiling; include lib/base/byte_io.h and delete this file once none remain.
#pragma once

#include "lib/base/byte_io.h"
