/* Crash safety, for real: a forked writer inserts, replaces and deletes cases
 * and flushes indexes continuously; it is killed with SIGKILL at random
 * moments.  After each kill the store must open, pass verify after any needed
 * catch-up, hold every case whose commit returned (with its exact vectors
 * and fields), hold no case whose delete committed, and answer searches as an
 * exact scan does.  The writer announces each transaction's operations over
 * a pipe before committing, and a commit marker after cmr_txn_commit
 * returned; a transaction killed between the two may have landed or not, and
 * either outcome is accepted for it alone. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "test_store_util.h"

#define DIM 16
#define ROUNDS 24
#define MAX_CASES 100000

enum { OP_PUT = 1, OP_DELETE = 2, OP_COMMITTED = 3 };
typedef struct report {
    uint32_t op, serial, version;
} report;

/* Case `serial` at `version`: the vector and age change with the version,
 * so a replaced case can be told from its earlier self. */
static void case_vector(uint32_t serial, uint32_t version, float *v)
{
    test_vector(serial * 131u + version, serial % 7, DIM, 0.5f, v);
}

static void fill_case(uint32_t serial, uint32_t version, cmr_case *c, char uid[64])
{
    memset(c, 0, sizeof *c);
    snprintf(uid, 64, "2.25.%u", serial + 1000);
    c->study_uid = uid;
    c->age_years = (int)(version % 100);
    c->study_date = 20200101;
    c->site = serial % 2 ? "A" : "B";
}

static _Noreturn void writer(const char *db, int fd, uint64_t seed, uint32_t first_serial)
{
    cmr_store *s;
    if (cmr_store_open(db, 0, NULL, &s) != 0)
        _exit(3);
    uint64_t rng = seed;
    uint32_t serial = first_serial;
    for (uint32_t step = 0;; step++) {
        cmr_txn *t;
        if (cmr_txn_begin(s, &t) != 0)
            _exit(4);
        report batch[8];
        unsigned n = 1 + (unsigned)(test_rng(&rng) % 8);
        for (unsigned i = 0; i < n; i++) {
            uint64_t dice = test_rng(&rng) % 10;
            cmr_case c;
            char uid[64];
            float img[DIM], txt[DIM];
            if (dice < 7 || serial < 10) { /* insert a new case */
                uint32_t sr = serial++;
                fill_case(sr, 0, &c, uid);
                case_vector(sr, 0, img);
                case_vector(sr, 1000, txt);
                if (cmr_txn_put(t, &c, img, txt, NULL) != 0)
                    _exit(5);
                batch[i] = (report){OP_PUT, sr, 0};
            } else if (dice < 9) { /* replace an older one */
                uint32_t sr = (uint32_t)(test_rng(&rng) % serial);
                uint32_t version = 1 + (uint32_t)(test_rng(&rng) % 50);
                fill_case(sr, version, &c, uid);
                case_vector(sr, version, img);
                case_vector(sr, version + 1000, txt);
                if (cmr_txn_put(t, &c, img, txt, NULL) != 0)
                    _exit(6);
                batch[i] = (report){OP_PUT, sr, version};
            } else { /* delete one, if it is there */
                uint32_t sr = (uint32_t)(test_rng(&rng) % serial);
                snprintf(uid, 64, "2.25.%u", sr + 1000);
                uint64_t id;
                cmr_txn_abort(t); /* look it up outside, then delete in a fresh txn */
                int found = cmr_store_find_uid(s, uid, &id) == 0;
                if (cmr_txn_begin(s, &t) != 0)
                    _exit(4);
                if (found && cmr_txn_delete(t, id) != 0)
                    _exit(7);
                /* earlier entries of this batch were aborted above */
                batch[0] = (report){found ? OP_DELETE : 0, sr, 0};
                n = 1;
                break;
            }
        }
        /* One write each: a pipe write under PIPE_BUF is atomic. */
        if (write(fd, batch, n * sizeof *batch) != (ssize_t)(n * sizeof *batch))
            _exit(9);
        if (cmr_txn_commit(t) != 0)
            _exit(8);
        report done = {OP_COMMITTED, 0, 0};
        if (write(fd, &done, sizeof done) != (ssize_t)sizeof done)
            _exit(9);
        if (step % 17 == 16 && cmr_store_flush(s) != 0)
            _exit(10);
        if (step % 5 == 4) { /* searches pull the index into memory and catch it up */
            float q[DIM];
            case_vector(step, 77, q);
            cmr_hits *h;
            if (cmr_store_search(s, CMR_SPACE_IMAGE, q, 5, NULL, &h) != 0)
                _exit(11);
            cmr_hits_free(h);
        }
    }
}

typedef struct expected {
    int32_t version; /* -1 absent (never written, or deleted) */
} expected;

static int is_uncertain(const report *pending, unsigned n_pending, uint32_t serial)
{
    for (unsigned i = 0; i < n_pending; i++)
        if (pending[i].op && pending[i].serial == serial)
            return 1;
    return 0;
}

/* Returns how many committed cases it found and checked. */
static size_t check_store(const char *db, expected *exp, uint32_t n_serials, const report *pending,
                          unsigned n_pending)
{
    cmr_store *s;
    assert_int_equal(cmr_store_open(db, 0, NULL, &s), 0);
    test_assert_verify_clean(s);

    size_t present = 0;
    for (uint32_t sr = 0; sr < n_serials; sr++) {
        char uid[64];
        snprintf(uid, sizeof uid, "2.25.%u", sr + 1000);
        uint64_t id;
        int rc = cmr_store_find_uid(s, uid, &id);
        if (is_uncertain(pending, n_pending, sr)) {
            /* Killed around its commit: adopt what is durable now, which must
             * be the state before or after the transaction. */
            int32_t after = -1;
            for (unsigned i = 0; i < n_pending; i++)
                if (pending[i].serial == sr)
                    after = pending[i].op == OP_PUT ? (int32_t)pending[i].version : -1;
            int32_t now = -1;
            if (rc == 0) {
                cmr_case *c;
                assert_int_equal(cmr_store_get(s, id, &c), 0);
                now = c->age_years;
                cmr_case_free(c);
            }
            if (now != exp[sr].version && now != after)
                fail_msg("case %s: state %d is neither before (%d) nor after (%d) its last transaction",
                         uid, now, exp[sr].version, after);
            exp[sr].version = now;
            if (now < 0)
                continue;
        }
        if (exp[sr].version < 0) {
            /* A put whose commit had not returned may or may not be there;
             * a committed delete must be. Only committed state is asserted. */
            continue;
        }
        assert_int_equal(rc, 0);
        present++;
        cmr_case *c;
        assert_int_equal(cmr_store_get(s, id, &c), 0);
        float want[DIM], got[DIM];
        case_vector(sr, (uint32_t)exp[sr].version, want);
        assert_int_equal(cmr_store_get_vector(s, id, CMR_SPACE_IMAGE, got), 0);
        double norm = 0, d = 0;
        for (int i = 0; i < DIM; i++)
            norm += want[i] * want[i];
        for (int i = 0; i < DIM; i++)
            d += fabs(got[i] - want[i] / sqrt(norm));
        if (c->age_years != exp[sr].version % 100 || d > 1e-4)
            fail_msg("case %s: stored version does not match the last committed one (%d)", uid,
                     exp[sr].version);
        cmr_case_free(c);
    }

    /* Searches agree with an exact scan. */
    for (unsigned qn = 0; qn < 10; qn++) {
        float q[DIM];
        case_vector(qn * 7919u, 5, q);
        cmr_hits *a, *e;
        assert_int_equal(cmr_store_search(s, CMR_SPACE_TEXT, q, 10, NULL, &a), 0);
        assert_int_equal(cmr_store_search_exact(s, CMR_SPACE_TEXT, q, 10, NULL, &e), 0);
        assert_int_equal(a->n, e->n);
        for (size_t i = 0; i < a->n; i++)
            assert_true(fabsf(a->hits[i].score - e->hits[i].score) < 1e-5f);
        cmr_hits_free(a);
        cmr_hits_free(e);
    }
    assert_int_equal(cmr_store_close(s), 0);
    return present;
}

static void test_sigkill_rounds(void **state)
{
    (void)state;
    char *dir = test_tmpdir();
    char db[4200];
    snprintf(db, sizeof db, "%s/db", dir);
    cmr_store *s;
    assert_int_equal(cmr_store_open(db, CMR_STORE_CREATE, NULL, &s), 0);
    assert_int_equal(cmr_store_set_model(s, "crash", "h", DIM), 0);
    assert_int_equal(cmr_store_close(s), 0);

    expected *exp = malloc(MAX_CASES * sizeof *exp);
    for (uint32_t i = 0; i < MAX_CASES; i++)
        exp[i].version = -1;
    uint32_t n_serials = 0;
    uint64_t rng = (uint64_t)time(NULL);
    print_message("crash test seed %llu\n", (unsigned long long)rng);
    unsigned total_reports = 0;
    size_t checked = 0;
    for (int round = 0; round < ROUNDS; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            writer(db, fds[1], test_rng(&rng), n_serials);
        }
        close(fds[1]);
        /* 20-300 ms: long enough for many commits, short enough to land
         * anywhere in a flush or an index write. */
        struct timespec ts = {0, (long)(20 + test_rng(&rng) % 280) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        assert_true(WIFSIGNALED(status)); /* not an early exit on an error */
        report rep, pending[8];
        unsigned n_pending = 0;
        while (read(fds[0], &rep, sizeof rep) == (ssize_t)sizeof rep) {
            if (rep.op == OP_COMMITTED) {
                for (unsigned i = 0; i < n_pending; i++)
                    exp[pending[i].serial].version =
                        pending[i].op == OP_PUT ? (int32_t)pending[i].version : -1;
                total_reports += n_pending;
                n_pending = 0;
                continue;
            }
            assert_true(rep.serial < MAX_CASES && n_pending < 8);
            pending[n_pending++] = rep;
            if (rep.serial + 1 > n_serials)
                n_serials = rep.serial + 1;
        }
        close(fds[0]);
        /* A round killed before its first commit (a loaded machine, 20 ms)
         * leaves nothing new; the rounds together must check plenty. */
        checked += check_store(db, exp, n_serials, pending, n_pending);
    }
    print_message("%d rounds, %u committed operations checked\n", ROUNDS, total_reports);
    assert_true(total_reports > 100);
    assert_true(checked > 0);
    free(exp);
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill_rounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
