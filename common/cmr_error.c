#include "cmr_error.h"

#include <stdio.h>
#include <string.h>

#define CMR_ERRMSG_MAX 1024

static _Thread_local char errmsg[CMR_ERRMSG_MAX];

const char *cmr_strerror(int code)
{
    switch (code) {
    case CMR_OK: return "success";
    case CMR_EINVAL: return "invalid argument";
    case CMR_ENOMEM: return "out of memory";
    case CMR_EIO: return "I/O error";
    case CMR_ENOTFOUND: return "not found";
    case CMR_EEXIST: return "already exists";
    case CMR_ECORRUPT: return "stored data is corrupt";
    case CMR_EFORMAT: return "malformed input";
    case CMR_EMODEL: return "model or dimension mismatch";
    case CMR_EFAISS: return "FAISS error";
    case CMR_ESTALE: return "derived index is stale";
    case CMR_ERDONLY: return "store is open read-only";
    case CMR_EDB: return "LMDB error";
    case CMR_EUNSUPPORTED: return "not supported";
    default: return "unknown error";
    }
}

const char *cmr_errmsg(void) { return errmsg; }

void cmr_clear_error(void) { errmsg[0] = '\0'; }

int cmr_vfail(int code, const char *fmt, va_list ap)
{
    vsnprintf(errmsg, sizeof errmsg, fmt, ap);
    return code;
}

int cmr_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cmr_vfail(code, fmt, ap);
    va_end(ap);
    return code;
}

int cmr_fail_context(int code, const char *fmt, ...)
{
    char prefix[CMR_ERRMSG_MAX], old[CMR_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, errmsg, sizeof old);
    /* Both parts are bounded by CMR_ERRMSG_MAX; the joined message is cut to fit. */
    size_t n = strlen(prefix);
    memcpy(errmsg, prefix, n + 1);
    const char *rest = old[0] ? old : cmr_strerror(code);
    size_t m = strlen(rest);
    if (m > sizeof errmsg - 1 - n)
        m = sizeof errmsg - 1 - n;
    memcpy(errmsg + n, rest, m);
    errmsg[n + m] = '\0';
    return code;
}
