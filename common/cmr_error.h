/* cmrsearch error codes, shared by every module.
 *
 * Functions that can fail return int: 0 on success, a negative CMR_E* code
 * on failure.  cmr_strerror() names the code; cmr_errmsg() gives the
 * detailed message of the last failure on the calling thread (which file,
 * field, row or case went wrong).  The message is owned by the library and
 * stays valid until the next failing call on the same thread. */
#ifndef CMR_ERROR_H
#define CMR_ERROR_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    CMR_OK = 0,
    CMR_EINVAL = -1,      /* bad argument or usage */
    CMR_ENOMEM = -2,      /* out of memory */
    CMR_EIO = -3,         /* operating-system I/O error */
    CMR_ENOTFOUND = -4,   /* no such case, key or file */
    CMR_EEXIST = -5,      /* already exists */
    CMR_ECORRUPT = -6,    /* stored data fails its own checks */
    CMR_EFORMAT = -7,     /* input file or record is malformed */
    CMR_EMODEL = -8,      /* vectors from a different model or dimension */
    CMR_EFAISS = -9,      /* FAISS reported an error */
    CMR_ESTALE = -10,     /* a derived index is stale and may not be rebuilt */
    CMR_ERDONLY = -11,    /* write attempted on a read-only handle */
    CMR_EDB = -12,        /* LMDB reported an error */
    CMR_EUNSUPPORTED = -13,
    CMR_ERR_MIN_ = -13
};

/* Static, never NULL. */
const char *cmr_strerror(int code);

/* The detailed message of the last failure on this thread ("" if none). */
const char *cmr_errmsg(void);

/* Record a failure: formats the detailed message and returns code, so that
 * callers can write `return cmr_fail(CMR_EFORMAT, "%s: row %zu: ...", ...)`. */
int cmr_fail(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
int cmr_vfail(int code, const char *fmt, va_list ap);

/* Prefix the current detailed message with context ("importing x.json: ").
 * Returns code unchanged. */
int cmr_fail_context(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

void cmr_clear_error(void);

#ifdef __cplusplus
}
#endif

#endif
