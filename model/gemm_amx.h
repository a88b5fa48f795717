/* The matrix products of the linear layers on Intel AMX tiles, at float32
 * accuracy (docs/gemm.md).  Internal to model/ (cmr_linear in ops.c is the
 * user); bench-model and the tests include it to name and measure the
 * kernel. */
#ifndef CMR_GEMM_AMX_H
#define CMR_GEMM_AMX_H

#include <stddef.h>

/* What the environment variable CMR_GEMM asks for. */
typedef enum cmr_gemm_mode {
    CMR_GEMM_AUTO,     /* unset, "", "auto" or unrecognised: AMX for the products where it pays */
    CMR_GEMM_OPENBLAS, /* "openblas": never AMX */
    CMR_GEMM_AMX       /* "amx": AMX for every product, however small (parity tests of small models) */
} cmr_gemm_mode;

/* CMR_GEMM's value (NULL when unset) to a mode, case-insensitively.  The
 * variable is read once per process; this is the parsing, for the tests. */
cmr_gemm_mode cmr_gemm_mode_parse(const char *value);

/* 1 when the AMX kernel can run: the CPU has AMX-TILE, AMX-BF16 and
 * AVX512-BF16, the kernel granted this process the tile data state
 * (arch_prctl ARCH_REQ_XCOMP_PERM), and CMR_GEMM is not "openblas".
 * Decided once per process, thread-safe. */
int cmr_gemm_amx_ready(void);

/* The mode read from CMR_GEMM (decided with cmr_gemm_amx_ready). */
cmr_gemm_mode cmr_gemm_mode_get(void);

/* "amx-bf16x3" when cmr_gemm_amx_ready(), else "openblas". */
const char *cmr_gemm_kernel(void);

/* C[m][n] (row stride ldc) = A[m][k] · B[n][k]^T, plus C's previous
 * contents when accumulate is set; row strides lda, ldb in floats.  Any
 * m, n, k >= 1.  Runs on the calling thread (configures and releases its
 * tiles); packs into a per-thread buffer of 964 KB.  Fails, leaving C
 * untouched, with CMR_EUNSUPPORTED when the kernel is not ready and
 * CMR_ENOMEM when the buffer cannot be had. */
int cmr_gemm_amx(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb, float *c,
                 size_t ldc, int accumulate);

/* The same product by a team of threads that take its pieces (32 columns,
 * or 32 rows of a panel of 256, per K panel of 768) as they come free: on
 * a machine whose cores are slowed by other work, unevenly and from one
 * second to the next (this one: 4x at times), a fixed split waits for the
 * slowest.  Zero a share, then every thread of the team calls this with
 * the same arguments and share; the product is complete when all have
 * returned (the end of the parallel region) unless every one of them
 * failed.  A thread that fails (CMR_ENOMEM) does so before taking a piece.
 * A NULL share is cmr_gemm_amx. */
typedef struct cmr_gemm_share {
    size_t next; /* the next piece to take */
    size_t done; /* pieces finished */
} cmr_gemm_share;
int cmr_gemm_amx_team(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                      float *c, size_t ldc, int accumulate, cmr_gemm_share *share);

#endif
