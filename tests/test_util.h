/* Helpers shared by the tests: a seeded generator and temporary directories. */
#ifndef CMR_TEST_UTIL_H
#define CMR_TEST_UTIL_H

#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static inline uint64_t test_rng(uint64_t *state)
{
    /* splitmix64: small, seeded, the same everywhere */
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline float test_gauss(uint64_t *state)
{
    double u1 = ((test_rng(state) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (test_rng(state) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* max |got - want| / max |want| over a tensor: the parity metric of the
 * model tests (an element-wise relative error is meaningless for values
 * that cancel to ~0).  Infinity if got has a NaN or an infinity. */
static inline double test_rel_error(const float *got, const float *want, size_t n)
{
    double mx = 0, err = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]))
            return INFINITY;
        mx = fabs(want[i]) > mx ? fabs(want[i]) : mx;
        double e = fabs((double)got[i] - want[i]);
        err = e > err ? e : err;
    }
    return mx > 0 ? err / mx : err;
}

/* Runs a shell command; a failure is printed with the command.  Returns
 * system()'s status. */
static inline int test_run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
    return rc;
}

/* Writes n bytes to path; 0, or -1 with errno set. */
static inline int test_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = n == 0 || fwrite(data, 1, n, f) == n;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

static inline char *test_tmpdir(void)
{
    char tmpl[] = "/tmp/cmrtest-XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static inline void test_rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[4096];
        if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p)
            continue;
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            test_rmtree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

#endif
