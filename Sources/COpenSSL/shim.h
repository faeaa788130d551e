#ifndef CASEFILES_COPENSSL_SHIM_H
#define CASEFILES_COPENSSL_SHIM_H
// The low-level SHA256_CTX / SHA_CTX are plain structs that can be persisted and
// restored, which EVP contexts cannot; we need that to resume a whole-file digest.
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/hmac.h>
#include <openssl/evp.h>
#endif
