/* cli/: .npy reading, import manifests, --where, and whole commands run
 * in-process (output captured) against stores in a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <lmdb.h>

#include "cmr_cli.h"
#include "test_store_util.h"

#define DIM 8
#define N_CASES 12
#define PATIENT_SECRET "MRN-SECRET-4711"

/* ---- scaffolding -------------------------------------------------------------------- */

typedef struct fixture {
    char dir[64];
    char db[128];
    char *out, *err; /* output of the last run() */
} fixture;


static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/cmrcli-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->db, sizeof f->db, "%s/db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    test_rmtree(f->dir);
    free(f->out);
    free(f->err);
    free(f);
    return 0;
}

/* Runs "cmrsearch ARGS..." (NULL-terminated) and keeps stdout and stderr. */
static int vrun(fixture *f, va_list ap)
{
    char *argv[32] = {"cmrsearch"};
    int argc = 1;
    const char *a;
    while ((a = va_arg(ap, const char *)) && argc < 31)
        argv[argc++] = (char *)a;
    free(f->out);
    free(f->err);
    size_t n_out, n_err;
    FILE *out = open_memstream(&f->out, &n_out), *err = open_memstream(&f->err, &n_err);
    assert_non_null(out);
    assert_non_null(err);
    int status = cmr_cli_run(argc, argv, out, err);
    fclose(out);
    fclose(err);
    return status;
}

static int run(fixture *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int status = vrun(f, ap);
    va_end(ap);
    return status;
}

static void path_in(const fixture *f, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", f->dir, name);
}

static void write_file(const char *path, const void *bytes, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(bytes, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

/* An .npy file with the given header dict and data, as np.save lays it out:
 * magic, version, header length, dict padded with spaces to 64 bytes, '\n'. */
static void write_npy_raw(const char *path, int major, const char *dict, const void *data,
                          size_t n_data)
{
    size_t prefix = major == 1 ? 10 : 12, dict_len = strlen(dict);
    size_t total = (prefix + dict_len + 1 + 63) / 64 * 64, header_len = total - prefix;
    uint8_t *buf = calloc(1, total + n_data + 1);
    assert_non_null(buf);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (uint8_t)major;
    buf[7] = 0;
    if (major == 1) {
        buf[8] = (uint8_t)(header_len & 0xff);
        buf[9] = (uint8_t)(header_len >> 8);
    } else {
        for (int i = 0; i < 4; i++)
            buf[8 + i] = (uint8_t)(header_len >> (8 * i));
    }
    memset(buf + prefix, ' ', header_len);
    memcpy(buf + prefix, dict, dict_len);
    buf[total - 1] = '\n';
    if (n_data)
        memcpy(buf + total, data, n_data);
    write_file(path, buf, total + n_data);
    free(buf);
}

static void write_npy_f32(const char *path, size_t rows, size_t cols, const float *data)
{
    char dict[128];
    snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %zu), }",
             rows, cols);
    write_npy_raw(path, 1, dict, data, rows * cols * sizeof(float));
}

/* Case i: cluster i % 3 (so neighbours exist), patient i / 2 (so patients
 * have two studies), diagnosis by cluster. */
static void case_vector(size_t i, float *v, unsigned dim, int text)
{
    for (unsigned d = 0; d < dim; d++) {
        float centre = (d % 3 == i % 3) ? 1.0f : 0.0f;
        float noise = (float)sin((double)(i * 31 + d * 7 + (unsigned)text * 13)) * 0.2f;
        v[d] = centre + noise;
    }
}

static const char *const cluster_codes[] = {"I42.1", "E85.4", "I42.0"};

static json_t *make_case(size_t i)
{
    char uid[64], pid[64], date[16];
    snprintf(uid, sizeof uid, "1.2.826.0.1.3680043.%zu", 1000 + i);
    snprintf(pid, sizeof pid, "%s-%zu", PATIENT_SECRET, i / 2);
    snprintf(date, sizeof date, "%d-%02zu-15", 2012 + (int)(i % 8), 1 + i % 12);
    return json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:f, s:s, s:i, s:[s,s], "
                     "s:[{s:s, s:s, s:s}], s:s, s:[s]}",
                     "row", (json_int_t)i, "study_uid", uid, "patient_id", pid, "study_date", date,
                     "site", i % 2 ? "Cleveland" : "Lyon", "manufacturer", i % 2 ? "SIEMENS" : "GE",
                     "scanner_model", "Avanto", "field_strength", 1.5, "sex", i % 2 ? "F" : "M",
                     "age", 30 + (int)i * 3, "views", "cine_sax", "lge_sax", "diagnoses", "code",
                     cluster_codes[i % 3], "system", "ICD-10", "label", "cardiomyopathy",
                     "impression", "Asymmetric septal hypertrophy.", "sources", "archive/study");
}

static json_t *make_manifest(size_t n, unsigned dim)
{
    json_t *cases = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(cases, make_case(i));
    return json_pack("{s:s, s:{s:s, s:s, s:i}, s:s, s:s, s:o}", "format", CMR_MANIFEST_FORMAT,
                     "model", "name", "test-clip", "weights_hash", "sha256:0123abcd", "dim",
                     (int)dim, "image_vectors", "image.npy", "text_vectors", "text.npy", "cases",
                     cases);
}

static void make_vectors(size_t n, unsigned dim, float **image, float **text)
{
    *image = malloc(n * dim * sizeof(float));
    *text = malloc(n * dim * sizeof(float));
    assert_non_null(*image);
    assert_non_null(*text);
    for (size_t i = 0; i < n; i++) {
        case_vector(i, *image + i * dim, dim, 0);
        case_vector(i, *text + i * dim, dim, 1);
    }
}

/* Writes manifest.json (stealing manifest), image.npy and text.npy. */
static void write_import(const fixture *f, json_t *manifest, const float *image, const float *text,
                         size_t rows, size_t cols)
{
    char path[256];
    path_in(f, "manifest.json", path, sizeof path);
    assert_int_equal(json_dump_file(manifest, path, JSON_INDENT(1)), 0);
    json_decref(manifest);
    path_in(f, "image.npy", path, sizeof path);
    write_npy_f32(path, rows, cols, image);
    path_in(f, "text.npy", path, sizeof path);
    write_npy_f32(path, rows, cols, text);
}

static void write_good_import(const fixture *f)
{
    float *image, *text;
    make_vectors(N_CASES, DIM, &image, &text);
    write_import(f, make_manifest(N_CASES, DIM), image, text, N_CASES, DIM);
    free(image);
    free(text);
}

static uint64_t store_cases(const fixture *f)
{
    cmr_store *s;
    assert_int_equal(cmr_store_open(f->db, CMR_STORE_RDONLY, NULL, &s), 0);
    cmr_store_stats st;
    assert_int_equal(cmr_store_stats_get(s, &st), 0);
    cmr_store_close(s);
    return st.cases;
}

static void import_manifest(fixture *f, int expected_status)
{
    char manifest[256];
    path_in(f, "manifest.json", manifest, sizeof manifest);
    int status = run(f, "import", "--db", f->db, "--manifest", manifest, NULL);
    if (status != expected_status)
        fail_msg("import exited %d, expected %d; stderr: %s", status, expected_status, f->err);
}

static void init_and_import(fixture *f)
{
    assert_int_equal(run(f, "init", "--db", f->db, NULL), 0);
    write_good_import(f);
    import_manifest(f, 0);
    assert_int_equal(store_cases(f), N_CASES);
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected \"%s\" in: %s", needle, haystack);
}

/* ---- .npy -------------------------------------------------------------------------- */

static void test_npy_good_versions(void **state)
{
    fixture *f = *state;
    float data[6] = {1, 2, 3, 4, 5, -6.5f};
    char path[256];
    path_in(f, "good.npy", path, sizeof path);
    for (int major = 1; major <= 3; major++) {
        write_npy_raw(path, major, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                      data, sizeof data);
        cmr_npy v;
        assert_int_equal(cmr_npy_read(path, &v), 0);
        assert_int_equal(v.rows, 2);
        assert_int_equal(v.cols, 3);
        assert_int_equal(v.ndim, 2);
        assert_memory_equal(v.data, data, sizeof data);
        cmr_npy_free(&v);
    }
    /* a 1-D vector reads as one row (queries); shape (D,) */
    write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", data,
                  sizeof data);
    cmr_npy v;
    assert_int_equal(cmr_npy_read(path, &v), 0);
    assert_int_equal(v.rows, 1);
    assert_int_equal(v.cols, 6);
    assert_int_equal(v.ndim, 1);
    cmr_npy_free(&v);
}

static void test_npy_float64_and_float16_converted(void **state)
{
    fixture *f = *state;
    char path[256];
    path_in(f, "f8.npy", path, sizeof path);
    double d[4] = {0.5, -1.25, 3.0, 1e-3};
    write_npy_raw(path, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", d,
                  sizeof d);
    cmr_npy v;
    assert_int_equal(cmr_npy_read(path, &v), 0);
    for (int i = 0; i < 4; i++)
        assert_float_equal(v.data[i], (float)d[i], 1e-7);
    cmr_npy_free(&v);
    /* float16: 1.0 = 0x3c00, -2.0 = 0xc000, 0.5 = 0x3800, 65504 = 0x7bff */
    uint8_t h[8] = {0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38, 0xff, 0x7b};
    path_in(f, "f2.npy", path, sizeof path);
    write_npy_raw(path, 1, "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 4), }", h,
                  sizeof h);
    assert_int_equal(cmr_npy_read(path, &v), 0);
    assert_float_equal(v.data[0], 1.0f, 0);
    assert_float_equal(v.data[1], -2.0f, 0);
    assert_float_equal(v.data[2], 0.5f, 0);
    assert_float_equal(v.data[3], 65504.0f, 0);
    cmr_npy_free(&v);
}

static void expect_npy_error(const char *dict, size_t n_data, const char *message_part)
{
    static const uint8_t zeros[256];
    char path[] = "/tmp/cmrcli-npy-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_npy_raw(path, 1, dict, zeros, n_data);
    cmr_npy v;
    int rc = cmr_npy_read(path, &v);
    unlink(path);
    assert_int_equal(rc, CMR_EFORMAT);
    assert_contains(cmr_errmsg(), message_part);
    assert_contains(cmr_errmsg(), path);
}

static void test_npy_refusals(void **state)
{
    (void)state;
    expect_npy_error("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", 24,
                     "dtype '<i4' is not supported");
    expect_npy_error("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", 24,
                     "dtype '>f4'");
    expect_npy_error("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24,
                     "Fortran");
    expect_npy_error("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20,
                     "truncated");
    expect_npy_error("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 28,
                     "4 bytes follow");
    expect_npy_error("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }", 96,
                     "3 dimensions, shape (2, 3, 4)");
    expect_npy_error("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 4, "0 dimensions");
    expect_npy_error("{'descr': '<f4', 'shape': (2, 3), }", 24, "lacks 'fortran_order'");
    expect_npy_error("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8,
                     "structured");
    expect_npy_error("{'descr': '<f4', 'fortran_order': maybe, 'shape': (2, 3), }", 24,
                     "fortran_order must be True or False");

    cmr_npy v;
    assert_int_equal(cmr_npy_parse("junk", "not a numpy file", 16, &v), CMR_EFORMAT);
    assert_contains(cmr_errmsg(), "not a NumPy");
    assert_int_equal(cmr_npy_read("/nonexistent/x.npy", &v), CMR_ENOTFOUND);
}

static void test_npy_row_checks(void **state)
{
    (void)state;
    float data[3 * 2] = {1, 2, 0, 0, 3, 4};
    cmr_npy v = {.rows = 3, .cols = 2, .ndim = 2, .descr = "<f4", .data = data};
    size_t bad;
    assert_int_equal(cmr_npy_check_rows("x.npy", &v, &bad), CMR_EFORMAT);
    assert_int_equal(bad, 1);
    assert_contains(cmr_errmsg(), "row 1 is all zeros");
    data[2] = NAN;
    assert_int_equal(cmr_npy_check_rows("x.npy", &v, &bad), CMR_EFORMAT);
    assert_contains(cmr_errmsg(), "row 1, column 0: value NaN");
    data[2] = 1;
    data[5] = -INFINITY;
    assert_int_equal(cmr_npy_check_rows("x.npy", &v, &bad), CMR_EFORMAT);
    assert_int_equal(bad, 2);
    data[5] = 4;
    assert_int_equal(cmr_npy_check_rows("x.npy", &v, &bad), 0);
}

/* ---- manifests and import ------------------------------------------------------------- */

/* Runs an import of manifest (stolen) with the good vectors, after mutate()
 * has had its way with them; expects status 1, an error naming the parts,
 * and the store unchanged. */
typedef void (*mutate_fn)(json_t *manifest, float *image, float *text);

static void expect_import_refused(fixture *f, mutate_fn mutate, const char *part1,
                                  const char *part2)
{
    if (access(f->db, F_OK) != 0)
        assert_int_equal(run(f, "init", "--db", f->db, NULL), 0);
    uint64_t before = store_cases(f);
    float *image, *text;
    make_vectors(N_CASES, DIM, &image, &text);
    json_t *manifest = make_manifest(N_CASES, DIM);
    mutate(manifest, image, text);
    write_import(f, manifest, image, text, N_CASES, DIM);
    free(image);
    free(text);
    import_manifest(f, CMR_EXIT_USAGE);
    assert_contains(f->err, "cmrsearch: import: ");
    assert_contains(f->err, part1);
    if (part2)
        assert_contains(f->err, part2);
    assert_string_equal(f->out, "");
    assert_int_equal(store_cases(f), before);
}

static json_t *case_at(json_t *manifest, size_t i)
{
    return json_array_get(json_object_get(manifest, "cases"), i);
}

static void nan_in_row_3(json_t *m, float *image, float *text)
{
    (void)m, (void)image;
    text[3 * DIM + 5] = NAN;
}
static void duplicate_uid_rows_1_and_4(json_t *m, float *image, float *text)
{
    (void)image, (void)text;
    json_object_set(case_at(m, 4), "study_uid", json_object_get(case_at(m, 1), "study_uid"));
}
static void model_dim_mismatch(json_t *m, float *image, float *text)
{
    (void)image, (void)text;
    json_object_set_new(json_object_get(m, "model"), "dim", json_integer(DIM * 2));
}
static void missing_study_uid(json_t *m, float *image, float *text)
{
    (void)image, (void)text;
    json_object_del(case_at(m, 2), "study_uid");
}
static void unknown_view(json_t *m, float *image, float *text)
{
    (void)image, (void)text;
    json_array_append_new(json_object_get(case_at(m, 6), "views"), json_string("lge_5ch"));
}
static void bad_date(json_t *m, float *image, float *text)
{
    (void)image, (void)text;
    json_object_set_new(case_at(m, 7), "study_date", json_string("2015-02-30"));
}
static void zero_image_row(json_t *m, float *image, float *text)
{
    (void)m, (void)text;
    memset(image + 9 * DIM, 0, DIM * sizeof *image);
}
static void misspelt_field(json_t *m, float *image, float *text)
{
    (void)image, (void)text;
    json_object_set_new(case_at(m, 5), "diagnosis", json_string("I42.1"));
}
static void bad_uid(json_t *m, float *image, float *text)
{
    (void)image, (void)text;
    json_object_set_new(case_at(m, 8), "study_uid", json_string("1.2.abc"));
}
static void row_out_of_range(json_t *m, float *image, float *text)
{
    (void)image, (void)text;
    json_object_set_new(case_at(m, 10), "row", json_integer(N_CASES));
}
static void repeated_row(json_t *m, float *image, float *text)
{
    (void)image, (void)text;
    json_object_set_new(case_at(m, 10), "row", json_integer(3));
}
static void wrong_format(json_t *m, float *image, float *text)
{
    (void)image, (void)text;
    json_object_set_new(m, "format", json_string("cmrsearch-import/2"));
}
static void bad_sex(json_t *m, float *image, float *text)
{
    (void)image, (void)text;
    json_object_set_new(case_at(m, 11), "sex", json_string("female"));
}

static void test_import_refusals_name_the_row(void **state)
{
    fixture *f = *state;
    expect_import_refused(f, nan_in_row_3, "text.npy: row 3, column 5: value NaN is not finite",
                          "cases[3], study 1.2.826.0.1.3680043.1003");
    expect_import_refused(f, duplicate_uid_rows_1_and_4, "cases[4] (row 4): study_uid",
                          "also in cases[1] (row 1)");
    expect_import_refused(f, model_dim_mismatch, "image.npy: image vectors have dimension 8",
                          "dimension 16");
    expect_import_refused(f, missing_study_uid, "cases[2] (row 2): study_uid is missing", NULL);
    expect_import_refused(f, unknown_view, "cases[6] (row 6): views[2]: 'lge_5ch' is not a view",
                          "cine_sax");
    expect_import_refused(f, bad_date, "cases[7] (row 7): study_date", "2015-02-30");
    expect_import_refused(f, zero_image_row, "image.npy: row 9 is all zeros", "cases[9]");
    expect_import_refused(f, misspelt_field, "cases[5] (row 5): unknown field 'diagnosis'", NULL);
    expect_import_refused(f, bad_uid, "cases[8] (row 8): Study Instance UID '1.2.abc' has a character other than digits and dots at position 5", NULL);
    expect_import_refused(f, row_out_of_range, "cases[10]: row must be a whole number from 0 to 11",
                          NULL);
    expect_import_refused(f, repeated_row, "cases[10] (row 3): row 3 is already used by cases[3]",
                          NULL);
    expect_import_refused(f, wrong_format, "\"cmrsearch-import/2\"", "cmrsearch-import/1");
    expect_import_refused(f, bad_sex, "cases[11] (row 11): sex must be", NULL);
}

static void test_import_shape_mismatches(void **state)
{
    fixture *f = *state;
    assert_int_equal(run(f, "init", "--db", f->db, NULL), 0);
    float *image, *text;
    make_vectors(N_CASES, DIM, &image, &text);
    /* one row fewer in the files than cases in the manifest */
    write_import(f, make_manifest(N_CASES, DIM), image, text, N_CASES - 1, DIM);
    import_manifest(f, CMR_EXIT_USAGE);
    assert_contains(f->err, "has 11 rows, but");
    assert_contains(f->err, "lists 12 cases");
    /* vectors narrower than the model says */
    write_import(f, make_manifest(N_CASES / 2, DIM), image, text, N_CASES / 2, DIM - 2);
    import_manifest(f, CMR_EXIT_USAGE);
    assert_contains(f->err, "dimension 6, but the manifest's model test-clip has dimension 8");
    /* a vector file that is not there is an I/O error */
    char path[256];
    write_good_import(f);
    path_in(f, "text.npy", path, sizeof path);
    unlink(path);
    import_manifest(f, CMR_EXIT_DATA);
    assert_contains(f->err, "text.npy: No such file");
    assert_int_equal(store_cases(f), 0);
    free(image);
    free(text);
}

/* A vector that passes the CLI's checks but that the store refuses
 * (too small to normalise) fails inside the write transaction: the
 * cases before it must not appear, and updates must not apply. */
static void test_import_nothing_half_imported(void **state)
{
    fixture *f = *state;
    init_and_import(f);
    float *image, *text;
    make_vectors(N_CASES + 4, DIM, &image, &text);
    json_t *manifest = make_manifest(N_CASES + 4, DIM);
    json_object_set_new(case_at(manifest, 0), "site", json_string("Changed"));
    for (int d = 0; d < DIM; d++)
        image[(N_CASES + 2) * DIM + d] = 1e-30f;
    write_import(f, manifest, image, text, N_CASES + 4, DIM);
    free(image);
    free(text);
    import_manifest(f, CMR_EXIT_USAGE);
    assert_contains(f->err, "cases[14] (row 14): nothing was imported");
    assert_int_equal(store_cases(f), N_CASES);
    assert_int_equal(run(f, "show", "--db", f->db, "--json", "1.2.826.0.1.3680043.1000", NULL), 0);
    assert_contains(f->out, "\"site\": \"Lyon\"");
}

static void test_import_upsert_dry_run_and_model(void **state)
{
    fixture *f = *state;
    char manifest[256];
    path_in(f, "manifest.json", manifest, sizeof manifest);
    assert_int_equal(run(f, "init", "--db", f->db, NULL), 0);
    write_good_import(f);
    /* dry run: checks, reports, writes nothing; works without a store too */
    assert_int_equal(run(f, "import", "--db", f->db, "--manifest", manifest, "--dry-run", NULL), 0);
    assert_contains(f->out, "would import 12 cases");
    assert_int_equal(store_cases(f), 0);
    assert_int_equal(run(f, "import", "--manifest", manifest, "--dry-run", "--json", NULL), 0);
    json_error_t jerr;
    json_t *doc = json_loads(f->out, 0, &jerr);
    assert_non_null(doc);
    assert_true(json_is_true(json_object_get(doc, "dry_run")));
    assert_int_equal(json_integer_value(json_object_get(doc, "cases")), N_CASES);
    json_decref(doc);

    import_manifest(f, 0);
    assert_contains(f->out, "12 new, 0 updated");
    import_manifest(f, 0);
    assert_contains(f->out, "0 new, 12 updated");
    assert_int_equal(store_cases(f), N_CASES);

    /* another model's vectors are refused */
    float *image, *text;
    make_vectors(N_CASES, DIM, &image, &text);
    json_t *m = make_manifest(N_CASES, DIM);
    json_object_set_new(json_object_get(m, "model"), "weights_hash", json_string("sha256:ffff"));
    write_import(f, m, image, text, N_CASES, DIM);
    free(image);
    free(text);
    import_manifest(f, CMR_EXIT_USAGE);
    assert_contains(f->err, "never mixed");
}

/* ---- search, show, verify, stats ---------------------------------------------------------- */

static json_t *run_json(fixture *f, int expected_status, ...)
{
    va_list ap;
    va_start(ap, expected_status);
    int status = vrun(f, ap);
    va_end(ap);
    if (status != expected_status)
        fail_msg("exit %d, expected %d; stderr: %s", status, expected_status, f->err);
    json_error_t jerr;
    /* exactly one document: trailing data is an error for json_loads */
    json_t *doc = json_loads(f->out, 0, &jerr);
    if (!doc)
        fail_msg("not one JSON document (%s): %s", jerr.text, f->out);
    return doc;
}

static void test_search_case_json(void **state)
{
    fixture *f = *state;
    init_and_import(f);
    json_t *doc = run_json(f, 0, "search", "--db", f->db, "--case", "4", "-k", "5", "--json", NULL);
    json_t *results = json_object_get(doc, "results");
    assert_int_equal(json_array_size(results), 5);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(doc, "query"), "case")), 4);
    double previous = INFINITY;
    size_t i;
    json_t *r;
    json_array_foreach(results, i, r) {
        json_int_t id = json_integer_value(json_object_get(r, "id"));
        double score = json_number_value(json_object_get(r, "score"));
        assert_true(id != 4); /* the case itself */
        assert_true(id != 3); /* row 2, the same patient's other study */
        assert_true(score <= previous + 1e-6);
        previous = score;
        assert_int_equal(json_integer_value(json_object_get(r, "rank")), (json_int_t)i + 1);
    }
    json_decref(doc);

    /* same patient: rows 2 and 3 (ids 3 and 4) share one; include it on request */
    doc = run_json(f, 0, "search", "--db", f->db, "--case", "4", "-k", "11",
                   "--include-same-patient", "--json", NULL);
    int found_sibling = 0;
    json_array_foreach(json_object_get(doc, "results"), i, r) {
        assert_true(json_integer_value(json_object_get(r, "id")) != 4);
        found_sibling |= json_integer_value(json_object_get(r, "id")) == 3;
    }
    assert_true(found_sibling);
    json_decref(doc);

    /* by UID, with a filter: every result passes it */
    doc = run_json(f, 0, "search", "--db", f->db, "--uid", "1.2.826.0.1.3680043.1000", "--where",
                   "site = Cleveland and age >= 40", "--target", "text", "--json", NULL);
    json_array_foreach(json_object_get(doc, "results"), i, r) {
        json_t *c = json_object_get(r, "case");
        assert_string_equal(json_string_value(json_object_get(c, "site")), "Cleveland");
        assert_true(json_integer_value(json_object_get(c, "age")) >= 40);
    }
    assert_true(json_array_size(json_object_get(doc, "results")) > 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "query"), "target")),
                        "text");
    json_decref(doc);
}

static void test_search_vector_and_human_output(void **state)
{
    fixture *f = *state;
    init_and_import(f);
    float q[DIM];
    case_vector(0, q, DIM, 0);
    char path[256];
    path_in(f, "query.npy", path, sizeof path);
    write_npy_raw(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (8,), }", q, sizeof q);
    json_t *doc = run_json(f, 0, "search", "--db", f->db, "--vector", path, "-k", "3", "--json", NULL);
    json_t *first = json_array_get(json_object_get(doc, "results"), 0);
    /* nothing excluded for a vector: the case it came from is the best hit */
    assert_int_equal(json_integer_value(json_object_get(first, "id")), 1);
    assert_float_equal(json_number_value(json_object_get(first, "score")), 1.0, 1e-5);
    json_decref(doc);

    assert_int_equal(run(f, "search", "--db", f->db, "--case", "2", "-k", "2", NULL), 0);
    assert_contains(f->out, "query: case 2 (study 1.2.826.0.1.3680043.1001)");
    assert_contains(f->out, "rank");
    assert_string_equal(f->err, "");
}

/* Paging, grouping and fusion weights through the command line. */
static void test_search_paging_and_fusion(void **state)
{
    fixture *f = *state;
    init_and_import(f);
    json_t *all = run_json(f, 0, "search", "--db", f->db, "--case", "1", "-k", "10", "--json", NULL);
    json_t *results = json_object_get(all, "results");
    size_t n = json_array_size(results);
    assert_true(n >= 6);
    assert_false(json_is_true(json_object_get(all, "more")));
    for (size_t offset = 0; offset < n; offset += 3) {
        char off[16];
        snprintf(off, sizeof off, "%u", (unsigned)offset);
        json_t *page = run_json(f, 0, "search", "--db", f->db, "--case", "1", "--limit", "3", "--offset", off,
                                "--json", NULL);
        json_t *pr = json_object_get(page, "results");
        for (size_t i = 0; i < json_array_size(pr); i++) {
            json_t *a = json_array_get(pr, i), *b = json_array_get(results, offset + i);
            assert_int_equal(json_integer_value(json_object_get(a, "id")), json_integer_value(json_object_get(b, "id")));
            assert_int_equal(json_integer_value(json_object_get(a, "rank")), (json_int_t)(offset + i + 1));
        }
        assert_int_equal(json_is_true(json_object_get(page, "more")), offset + 3 < n);
        json_decref(page);
    }
    /* the default case weights, and the fused score from both similarities */
    json_t *fusion = json_object_get(all, "fusion");
    double wi = json_number_value(json_object_get(fusion, "w_image")), wt = json_number_value(json_object_get(fusion, "w_text"));
    assert_float_equal(wi, 0.2, 1e-6);
    json_t *r;
    size_t i;
    json_array_foreach(results, i, r) {
        json_t *sim = json_object_get(r, "similarity");
        double si = json_number_value(json_object_get(sim, "image")), st = json_number_value(json_object_get(sim, "text"));
        assert_float_equal(json_number_value(json_object_get(r, "score")), (wi * si + wt * st) / (wi + wt), 1e-5);
        assert_true(json_is_array(json_object_get(r, "views")));
        assert_true(json_is_object(json_object_get(r, "findings")));
    }
    json_decref(all);
    /* explicit weights */
    json_t *img = run_json(f, 0, "search", "--db", f->db, "--case", "1", "--w-image", "1", "--w-text", "0",
                           "--one-per-patient", "--json", NULL);
    json_array_foreach(json_object_get(img, "results"), i, r)
        assert_float_equal(json_number_value(json_object_get(r, "score")),
                           json_number_value(json_object_get(json_object_get(r, "similarity"), "image")), 1e-5);
    assert_true(json_is_true(json_object_get(json_object_get(img, "query"), "one_per_patient")));
    json_decref(img);
    assert_int_equal(run(f, "search", "--db", f->db, "--case", "1", "--w-image", "1", NULL), CMR_EXIT_USAGE);
    assert_contains(f->err, "give both --w-image and --w-text");
    assert_int_equal(run(f, "search", "--db", f->db, "--case", "1", "--w-image", "1", "--w-text", "1", "--target",
                         "text", NULL), CMR_EXIT_USAGE);
    assert_contains(f->err, "cannot be combined");
    assert_int_equal(run(f, "search", "--db", f->db, "--case", "1", "-k", "3", "--limit", "3", NULL), CMR_EXIT_USAGE);
    assert_int_equal(run(f, "search", "--db", f->db, "--case", "1", "--w-image", "-1", "--w-text", "1", NULL),
                     CMR_EXIT_USAGE);
    assert_int_equal(run(f, "search", "--db", f->db, "--case", "1", "--offset", "9999", "-k", "2", NULL),
                     CMR_EXIT_USAGE);
    /* a store indexed without finding scores says how to get them */
    assert_int_not_equal(run(f, "search", "--db", f->db, "--case", "1", "--where", "has lge", NULL), 0);
    assert_contains(f->err, "--rescore");
    assert_int_equal(run(f, "search", "--db", f->db, "--case", "1", "-k", "2", "--offset", "1", NULL), 0);
    assert_contains(f->out, "results 2 to 3");
    assert_contains(f->out, "findings: -");
}

static void test_show_json_hides_patient(void **state)
{
    fixture *f = *state;
    init_and_import(f);
    json_t *doc = run_json(f, 0, "show", "--db", f->db, "--json", "3", NULL);
    assert_null(strstr(f->out, "patient_id"));
    assert_null(strstr(f->out, PATIENT_SECRET));
    const char *key = json_string_value(json_object_get(doc, "patient_key"));
    assert_non_null(key);
    assert_int_equal(strlen(key), 64);
    assert_int_equal(strspn(key, "0123456789abcdef"), 64);
    assert_string_equal(json_string_value(json_object_get(doc, "study_uid")),
                        "1.2.826.0.1.3680043.1002");
    assert_string_equal(json_string_value(json_object_get(doc, "study_date")), "2014-03-15");
    assert_int_equal(json_array_size(json_object_get(doc, "views")), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(
                            json_object_get(doc, "diagnoses"), 0), "code")), "I42.0");
    assert_int_equal(json_array_size(json_object_get(doc, "vectors")), 2);
    assert_non_null(strstr(json_string_value(json_object_get(doc, "model")), "test-clip@"));
    json_decref(doc);

    /* the human form too, and by UID */
    assert_int_equal(run(f, "show", "--db", f->db, "1.2.826.0.1.3680043.1002", NULL), 0);
    assert_contains(f->out, "case 3");
    assert_contains(f->out, "patient key");
    assert_null(strstr(f->out, PATIENT_SECRET));

    /* and the patient identifier is nowhere in the store files */
    char path[256];
    snprintf(path, sizeof path, "%s/data.mdb", f->db);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    size_t cap = 1 << 20, n;
    char *buf = malloc(cap);
    n = fread(buf, 1, cap, fp);
    fclose(fp);
    assert_null(memmem(buf, n, PATIENT_SECRET, strlen(PATIENT_SECRET)));
    free(buf);
}

static void test_verify_stats_reindex(void **state)
{
    fixture *f = *state;
    init_and_import(f);
    json_t *doc = run_json(f, 0, "verify", "--db", f->db, "--json", NULL);
    assert_true(json_is_true(json_object_get(doc, "sound")));
    assert_int_equal(json_integer_value(json_object_get(doc, "cases_checked")), N_CASES);
    json_decref(doc);
    doc = run_json(f, 0, "stats", "--db", f->db, "--json", NULL);
    assert_int_equal(json_integer_value(json_object_get(doc, "cases")), N_CASES);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(doc, "model"), "dim")), DIM);
    json_decref(doc);
    doc = run_json(f, 0, "reindex", "--db", f->db, "--json", NULL);
    json_t *image = json_object_get(json_object_get(doc, "spaces"), "image");
    assert_int_equal(json_integer_value(json_object_get(image, "vectors")), N_CASES);
    assert_true(json_is_true(json_object_get(json_object_get(image, "index"), "on_disk_current")));
    json_decref(doc);
    assert_int_equal(run(f, "verify", "--db", f->db, "--read-only", NULL), 0);
    assert_contains(f->out, "sound");
}

/* A vector removed behind the store's back (the record still claims it):
 * verify must say so and exit 2. */
static void test_verify_finds_a_problem(void **state)
{
    fixture *f = *state;
    init_and_import(f);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    uint8_t key_bytes[8] = {0, 0, 0, 0, 0, 0, 0, 5}; /* case 5, big-endian (schema/record-format.md) */
    MDB_val key = {sizeof key_bytes, key_bytes};
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
    assert_int_equal(mdb_env_set_mapsize(env, 1ull << 30), 0);
    assert_int_equal(mdb_env_open(env, f->db, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "vec_image", 0, &dbi), 0);
    assert_int_equal(mdb_del(txn, dbi, &key, NULL), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    assert_int_equal(run(f, "verify", "--db", f->db, "--read-only", NULL), CMR_EXIT_DATA);
    assert_contains(f->out, "problem: ");
    assert_contains(f->out, "NOT SOUND");
    assert_contains(f->err, "cmrsearch: verify: ");
    json_t *doc = run_json(f, CMR_EXIT_DATA, "verify", "--db", f->db, "--json", NULL);
    assert_true(json_is_false(json_object_get(doc, "sound")));
    assert_true(json_array_size(json_object_get(doc, "problems")) > 0);
    json_decref(doc);
}

/* ---- --where ---------------------------------------------------------------------------- */

static void test_where_good(void **state)
{
    (void)state;
    cmr_where w;
    assert_int_equal(cmr_where_parse("diagnosis in (I42.1, E85.4) and date >= 2015-01-01 and "
                                     "date <= 2019-12-31 and site = \"Cleveland\" and "
                                     "manufacturer = siemens and sex = F and age between 40 and 70",
                                     &w), 0);
    const cmr_filter *f = &w.filter;
    assert_int_equal(f->n_diagnoses, 2);
    assert_string_equal(f->diagnoses[0], "I42.1");
    assert_string_equal(f->diagnoses[1], "E85.4");
    assert_int_equal(f->date_from, 20150101);
    assert_int_equal(f->date_to, 20191231);
    assert_string_equal(f->site, "Cleveland");
    assert_string_equal(f->manufacturer, "siemens");
    assert_int_equal(f->sex, 'F');
    assert_int_equal(f->age_min, 40);
    assert_int_equal(f->age_max, 70);
    cmr_where_free(&w);

    /* strict bounds become inclusive ones across month and year ends; keywords
     * in any case; quoted values with escapes */
    assert_int_equal(cmr_where_parse("DATE > 2015-12-31 AND date < 20160301 and age < 50 and "
                                     "age > 17 and dx = 'I42.1' and site = 'St \\'Mary' and sex=m",
                                     &w), 0);
    assert_int_equal(w.filter.date_from, 20160101);
    assert_int_equal(w.filter.date_to, 20160229);
    assert_int_equal(w.filter.age_min, 18);
    assert_int_equal(w.filter.age_max, 49);
    assert_string_equal(w.filter.site, "St 'Mary");
    assert_int_equal(w.filter.sex, 'M');
    assert_int_equal(w.filter.n_diagnoses, 1);
    cmr_where_free(&w);

    /* UTF-8 needs no quotes */
    assert_int_equal(cmr_where_parse("site = H\xc3\xb4pital", &w), 0);
    assert_string_equal(w.filter.site, "H\xc3\xb4pital");
    cmr_where_free(&w);

    /* a single bound: the other stays open */
    assert_int_equal(cmr_where_parse("age >= 65", &w), 0);
    assert_int_equal(w.filter.age_min, 65);
    assert_true(w.filter.age_max >= 130);
    cmr_where_free(&w);
    assert_int_equal(cmr_where_parse("date = 2020-02-29", &w), 0);
    assert_int_equal(w.filter.date_from, 20200229);
    assert_int_equal(w.filter.date_to, 20200229);
    cmr_where_free(&w);
}

/* Finding clauses: bounds on the prompt bank's scores, "has"/"lacks" sugar,
 * intersections, strict bounds one float away. */
static void test_where_findings(void **state)
{
    (void)state;
    cmr_where w;
    assert_int_equal(cmr_where_parse("has LGE and has hcm and finding lv_dilation between 0.2 and 0.9 and "
                                     "finding lv_dilation < 0.8 and lacks normal and age >= 40", &w), 0);
    const cmr_filter *f = &w.filter;
    assert_int_equal(f->n_finding_bounds, 4);
    assert_string_equal(f->finding_bounds[0].name, "lge");
    assert_float_equal(f->finding_bounds[0].min, 0.5, 0);
    assert_float_equal(f->finding_bounds[0].max, 1.0, 0);
    assert_string_equal(f->finding_bounds[1].name, "hcm");
    assert_string_equal(f->finding_bounds[2].name, "lv_dilation");
    assert_float_equal(f->finding_bounds[2].min, 0.2, 1e-7);
    assert_true(f->finding_bounds[2].max < 0.8f && f->finding_bounds[2].max > 0.7999f);
    assert_string_equal(f->finding_bounds[3].name, "normal");
    assert_true(f->finding_bounds[3].max < 0.5f && f->finding_bounds[3].min == 0.0f);
    assert_int_equal(f->age_min, 40);
    cmr_where_free(&w);
    assert_int_equal(cmr_where_parse("finding lge > 0.5", &w), 0);
    assert_true(w.filter.finding_bounds[0].min > 0.5f && w.filter.finding_bounds[0].min < 0.5001f);
    cmr_where_free(&w);
    assert_int_equal(cmr_where_parse("finding arvc = 1", &w), 0);
    assert_float_equal(w.filter.finding_bounds[0].min, 1.0, 0);
    cmr_where_free(&w);
}

static void expect_where_error(const char *expr, const char *part)
{
    cmr_where w;
    assert_int_equal(cmr_where_parse(expr, &w), CMR_EINVAL);
    if (!strstr(cmr_errmsg(), part))
        fail_msg("for \"%s\": expected \"%s\" in: %s", expr, part, cmr_errmsg());
    assert_null(w.text);
}

static void test_where_errors(void **state)
{
    (void)state;
    expect_where_error("", "empty");
    expect_where_error("colour = red", "column 1, at 'colour': unknown field");
    expect_where_error("age >= 40 or sex = F", "column 11, at 'or': only 'and'");
    expect_where_error("date >= 2015-13-01", "column 9, at '2015-13-01': not a date");
    expect_where_error("site = \"Cleveland", "the quoted string is not closed");
    expect_where_error("diagnosis in (I42.1, E85.4", "at the end: expected ',' or ')'");
    expect_where_error("diagnosis in I42.1", "expected '(' after 'in'");
    expect_where_error("site in (A, B)", "site takes one value");
    expect_where_error("sex = X", "column 7, at 'X': sex is F, M or O");
    expect_where_error("age between 40 70", "expected 'and' in 'age between A and B'");
    expect_where_error("age = 200", "expected an age in whole years from 0 to 130");
    expect_where_error("age = 0", "cannot be expressed");
    expect_where_error("age > 60 and age < 50", "leave no age");
    expect_where_error("date >= 2020-01-01 and date <= 2019-01-01", "leave no date");
    expect_where_error("site = A site = B", "column 10, at 'site': expected 'and'");
    expect_where_error("site = A and site = B", "site is given twice");
    expect_where_error("dx = A and diagnosis = B", "diagnosis is given twice");
    expect_where_error("age != 40", "'!=' is not supported");
    expect_where_error("age >= 40 and", "at the end: expected a field");
    expect_where_error("manufacturer siemens", "expected '=' after manufacturer");
    expect_where_error("age ~ 4", "unexpected character");
    expect_where_error("has bogus", "column 5, at 'bogus': unknown finding (findings: lv_systolic_dysfunction");
    expect_where_error("has", "at the end: expected a finding");
    expect_where_error("finding lge >= 1.5", "expected a probability from 0 to 1");
    expect_where_error("finding lge", "expected =, <, <=, >, >= or 'between'");
    expect_where_error("has lge and lacks lge", "the conditions on finding lge leave no score");
    expect_where_error("finding hcm between 0.2 0.4", "expected 'and' in 'finding hcm between A and B'");
}

/* ---- exit statuses and usage ------------------------------------------------------------- */

static void test_exit_statuses(void **state)
{
    fixture *f = *state;
    assert_int_equal(run(f, NULL), CMR_EXIT_USAGE);
    assert_int_equal(run(f, "frobnicate", NULL), CMR_EXIT_USAGE);
    assert_contains(f->err, "'frobnicate' is not a command");
    assert_int_equal(run(f, "search", "--db", f->db, "--bogus", NULL), CMR_EXIT_USAGE);
    assert_contains(f->err, "cmrsearch: search: unknown option '--bogus'");
    assert_int_equal(run(f, "search", "--db", f->db, NULL), CMR_EXIT_USAGE);
    assert_contains(f->err, "give exactly one query");
    assert_int_equal(run(f, "search", "--db", f->db, "--text", "", NULL), CMR_EXIT_USAGE);
    assert_contains(f->err, "the phrase is empty");
    assert_int_equal(run(f, "search", "--db", f->db, "--text", "LGE", "--case", "1", NULL), CMR_EXIT_USAGE);
    assert_int_equal(run(f, "search", "--db", f->db, "--text", "LGE", "--space", "image", NULL), CMR_EXIT_USAGE);
    assert_int_equal(run(f, "search", "--db", f->db, "--case", "1", "-k", "0", NULL), CMR_EXIT_USAGE);
    assert_int_equal(run(f, "search", "--db", f->db, "--case", "1", "--where", "x = 1", NULL),
                     CMR_EXIT_USAGE);
    assert_contains(f->err, "--where: column 1");
    assert_int_equal(run(f, "import", "--db", f->db, NULL), CMR_EXIT_USAGE);
    assert_int_equal(run(f, "show", "--db", f->db, "--json", "--json", "1", NULL), CMR_EXIT_USAGE);
    assert_contains(f->err, "more than once");

    /* no store there: a data error */
    assert_int_equal(run(f, "show", "--db", f->db, "1", NULL), CMR_EXIT_DATA);
    assert_contains(f->err, "cmrsearch: show: ");
    assert_int_equal(run(f, "verify", "--db", f->db, NULL), CMR_EXIT_DATA);
    assert_string_equal(f->out, "");

    init_and_import(f);
    assert_int_equal(run(f, "init", "--db", f->db, NULL), CMR_EXIT_USAGE);
    assert_contains(f->err, "already holds a store");
    assert_int_equal(run(f, "show", "--db", f->db, "999", NULL), CMR_EXIT_DATA);
    assert_int_equal(run(f, "search", "--db", f->db, "--uid", "9.9.9", NULL), CMR_EXIT_DATA);
    assert_int_equal(run(f, "show", "--db", f->db, "--json", "1", NULL), CMR_EXIT_OK);
}

static void test_option_parsing(void **state)
{
    (void)state;
    const char *db = NULL, *k = NULL, *pos[2];
    int flag = 0, help = 0;
    const cmr_cli_option options[] = {
        {"db", 0, &db, NULL}, {"k", 'k', &k, NULL}, {"json", 0, NULL, &flag}};
    size_t n_pos;
    char *a1[] = {"search", "--db=/x", "-k5", "one", "--json", "--", "--two"};
    assert_int_equal(cmr_cli_parse_options(7, a1, options, 3, pos, 2, &n_pos, &help), 0);
    assert_string_equal(db, "/x");
    assert_string_equal(k, "5");
    assert_int_equal(flag, 1);
    assert_int_equal(n_pos, 2);
    assert_string_equal(pos[0], "one");
    assert_string_equal(pos[1], "--two");
    char *a2[] = {"search", "--db"};
    assert_int_equal(cmr_cli_parse_options(2, a2, options, 3, pos, 2, &n_pos, &help), CMR_EINVAL);
    assert_contains(cmr_errmsg(), "--db needs a value");
    char *a3[] = {"search", "--json=yes"};
    assert_int_equal(cmr_cli_parse_options(2, a3, options, 3, pos, 2, &n_pos, &help), CMR_EINVAL);
    assert_contains(cmr_errmsg(), "takes no value");
    char *a4[] = {"search", "a", "b", "c"};
    assert_int_equal(cmr_cli_parse_options(4, a4, options, 3, pos, 2, &n_pos, &help), CMR_EINVAL);
    assert_contains(cmr_errmsg(), "unexpected argument 'c'");
    char *a5[] = {"search", "-x"};
    assert_int_equal(cmr_cli_parse_options(2, a5, options, 3, pos, 2, &n_pos, &help), CMR_EINVAL);
    assert_contains(cmr_errmsg(), "unknown option '-x'");
    char *a6[] = {"search", "--bogus", "-h"};
    assert_int_equal(cmr_cli_parse_options(3, a6, options, 3, pos, 2, &n_pos, &help), CMR_EINVAL);
    char *a7[] = {"search", "-h", "--bogus"};
    assert_int_equal(cmr_cli_parse_options(3, a7, options, 3, pos, 2, &n_pos, &help), 0);
    assert_int_equal(help, 1);

    int32_t date;
    assert_int_equal(cmr_cli_parse_date("20240229", &date), 0);
    assert_int_equal(date, 20240229);
    assert_int_equal(cmr_cli_parse_date("2023-02-29", &date), CMR_EINVAL);
    assert_int_equal(cmr_cli_parse_date("2023-2-28", &date), CMR_EINVAL);
    uint64_t v;
    assert_int_equal(cmr_cli_parse_u64("-k", "-1", 1, 10, &v), CMR_EINVAL);
    assert_int_equal(cmr_cli_parse_u64("-k", "11", 1, 10, &v), CMR_EINVAL);
    assert_int_equal(cmr_cli_parse_u64("-k", "10", 1, 10, &v), 0);
}

static void test_help_everywhere(void **state)
{
    fixture *f = *state;
    static const char *const commands[] = {"init", "import", "search", "show", "verify",
                                           "reindex", "stats", "info"};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        assert_int_equal(run(f, commands[i], "--help", NULL), 0);
        assert_true(strncmp(f->out, "usage: cmrsearch ", 17) == 0);
        assert_int_equal(run(f, "help", commands[i], NULL), 0);
        assert_true(strncmp(f->out, "usage: cmrsearch ", 17) == 0);
    }
    assert_int_equal(run(f, "--help", NULL), 0);
    assert_contains(f->out, "reindex");
    assert_int_equal(run(f, "--version", NULL), 0);
    assert_contains(f->out, "cmrsearch ");
}

static void test_init_settings(void **state)
{
    fixture *f = *state;
    assert_int_equal(run(f, "init", "--db", f->db, "--nprobe", "0", NULL), CMR_EXIT_USAGE);
    assert_int_equal(run(f, "init", "--db", f->db, "--model-name", "m", NULL), CMR_EXIT_USAGE);
    assert_contains(f->err, "go together");
    json_t *doc = run_json(f, 0, "init", "--db", f->db, "--ivf-threshold", "500", "--nprobe", "4",
                           "--model-name", "test-clip", "--model-hash", "sha256:0123abcd", "--dim",
                           "8", "--json", NULL);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(doc, "config"),
                                                        "ivf_threshold")), 500);
    assert_true(json_is_null(json_object_get(json_object_get(doc, "config"), "factory")));
    json_decref(doc);
    /* the model fixed at init accepts a matching import */
    write_good_import(f);
    import_manifest(f, 0);
    /* a directory with other files is not adopted */
    char other[256];
    path_in(f, "other", other, sizeof other);
    mkdir(other, 0700);
    char junk[300];
    snprintf(junk, sizeof junk, "%s/notes.txt", other);
    write_file(junk, "x", 1);
    assert_int_equal(run(f, "init", "--db", other, NULL), CMR_EXIT_USAGE);
    assert_contains(f->err, "not empty");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_npy_good_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_npy_float64_and_float16_converted, setup, teardown),
        cmocka_unit_test(test_npy_refusals),
        cmocka_unit_test(test_npy_row_checks),
        cmocka_unit_test_setup_teardown(test_import_refusals_name_the_row, setup, teardown),
        cmocka_unit_test_setup_teardown(test_import_shape_mismatches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_import_nothing_half_imported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_import_upsert_dry_run_and_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_search_case_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_search_vector_and_human_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_show_json_hides_patient, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_stats_reindex, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_finds_a_problem, setup, teardown),
        cmocka_unit_test(test_where_good),
        cmocka_unit_test(test_where_errors),
        cmocka_unit_test(test_where_findings),
        cmocka_unit_test_setup_teardown(test_search_paging_and_fusion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exit_statuses, setup, teardown),
        cmocka_unit_test(test_option_parsing),
        cmocka_unit_test_setup_teardown(test_help_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_settings, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
