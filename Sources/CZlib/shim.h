#ifndef CASEFILES_CZLIB_SHIM_H
#define CASEFILES_CZLIB_SHIM_H
// The system zlib (zlib1g-dev), used directly: compressed uploads inflate request bodies as they stream in,
// and the bundle index needs inflatePrime / inflateSetDictionary to restart inflating mid-stream, which no
// wrapper in the package list exposes. `deflateInit2`/`inflateInit2` are macros Swift cannot call, hence
// the two functions below.
#include <zlib.h>

/// inflateInit2 (a macro in zlib.h): windowBits 15 + 16 for gzip, + 32 to detect gzip or zlib, -15 for raw deflate.
static inline int casefiles_inflate_init2(z_streamp stream, int windowBits) {
    return inflateInit2(stream, windowBits);
}

/// deflateInit2 (a macro in zlib.h), with zlib's defaults for memLevel (8) and strategy.
static inline int casefiles_deflate_init2(z_streamp stream, int level, int windowBits) {
    return deflateInit2(stream, level, Z_DEFLATED, windowBits, 8, Z_DEFAULT_STRATEGY);
}
#endif
