/* cmrsearch serve: the HTTP API in-process, spoken to over plain sockets
 * (uploads: test_server_upload.c).
 *
 * A small store is built once: a two-study phantom archive indexed with the
 * default model (real DICOM sources, for images and uploads) plus synthetic
 * cases embedded with the same model (impressions through the text tower,
 * image vectors near them) whose source folders do not exist.  One server
 * answers on loopback without tokens; a second one with a token file, a
 * small body limit and a small rate limit checks the refusals. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <jansson.h>

#include "cmr_cli.h"
#include "cmr_model.h"
#include "cmr_searcher.h"
#include "test_util.h"

#define N_SYNTH 40
/* 0 expected; otherwise the detailed message goes with the failure. */
#define OK(call)                                                                                                   \
    do {                                                                                                           \
        int rc_ = (call);                                                                                          \
        if (rc_)                                                                                                   \
            fail_msg("%s: %s (%s)", #call, cmr_strerror(rc_), cmr_errmsg());                                       \
    } while (0)
#define TOKEN "reader1:0123456789abcdef-secret"
#define SECRET "0123456789abcdef-secret"
#define PHRASE "concentric hypertrophy Zyxwvut-7781 with patchy LGE"

char *g_dir, *g_db, *g_archive, *g_study_dir;
cmr_store *g_store;
cmr_server *g_srv, *g_strict;
uint64_t g_real_case, g_synth_case;

#include "test_server.h"

/* ---- fixtures --------------------------------------------------------------------- */

static int run_cli(const char *a0, const char *a1, const char *a2, const char *a3, const char *a4)
{
    char *argv[] = {"cmrsearch", (char *)a0, (char *)a1, (char *)a2, (char *)a3, (char *)a4, NULL};
    int argc = 1;
    while (argv[argc])
        argc++;
    FILE *out = fopen("/dev/null", "w"), *err = stderr;
    int rc = cmr_cli_run(argc, argv, out, err);
    fclose(out);
    return rc;
}

/* The first study folder of the phantom (the folder holding a series folder). */
static char *find_study_dir(const char *root, int depth)
{
    DIR *d = opendir(root);
    if (!d)
        return NULL;
    struct dirent *e;
    char *found = NULL;
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "reports"))
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", root, e->d_name);
        struct stat st;
        if (stat(p, &st) || !S_ISDIR(st.st_mode))
            continue;
        found = depth == 3 ? strdup(p) : find_study_dir(p, depth + 1);
    }
    closedir(d);
    return found;
}

static const char *const synth_impressions[] = {
    "Normal biventricular size and function. No late gadolinium enhancement.",
    "Asymmetric septal hypertrophy with patchy mid-wall LGE, consistent with hypertrophic cardiomyopathy.",
    "Dilated left ventricle with severely reduced ejection fraction. No LGE.",
    "Subendocardial LGE in the LAD territory consistent with prior infarction.",
    "Diffuse subendocardial LGE and difficult nulling, suggestive of cardiac amyloidosis.",
    "Subepicardial LGE of the lateral wall, consistent with myocarditis.",
    "Apical hypertrophy with apical LGE.",
    "Excessive trabeculation of the left ventricle, meeting criteria for non-compaction.",
};
static const char *const synth_dx[] = {"Z00.0", "I42.1", "I42.0", "I25.2", "E85.4", "I40.9", "I42.2", "I42.8"};

static int setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    g_dir = test_tmpdir();
    assert_non_null(g_dir);
    assert_true(asprintf(&g_db, "%s/db", g_dir) > 0);
    assert_true(asprintf(&g_archive, "%s/archive", g_dir) > 0);
    /* Uploads go under a temporary folder of this test's own, so that the
     * check that none is left behind sees no other process's. */
    char *tmp;
    assert_true(asprintf(&tmp, "%s/tmp", g_dir) > 0);
    assert_int_equal(mkdir(tmp, 0700), 0);
    setenv("TMPDIR", tmp, 1);
    free(tmp);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' --out '%s' --studies 2 --seed 11 >/dev/null", CMR_PHANTOM, g_archive);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(run_cli("init", "--db", g_db, NULL, NULL), 0);
    setenv("CMRSEARCH_MODEL", CMR_MODEL_DIR, 1);
    assert_int_equal(run_cli("index", "--db", g_db, g_archive, NULL), 0);
    g_study_dir = find_study_dir(g_archive, 1);
    assert_non_null(g_study_dir);

    /* Synthetic cases in the default model's space. */
    assert_int_equal(cmr_store_open(g_db, 0, NULL, &g_store), 0);
    uint64_t *ids;
    size_t n;
    assert_int_equal(cmr_store_list(g_store, &ids, &n), 0);
    assert_int_equal(n, 2);
    g_real_case = ids[0];
    free(ids);
    cmr_model *m;
    assert_int_equal(cmr_model_open(CMR_MODEL_DIR, &m), 0);
    unsigned dim = cmr_model_dim(m);
    float *tv = malloc(dim * sizeof *tv), *iv = malloc(dim * sizeof *iv);
    uint64_t rng = 5;
    cmr_txn *t;
    assert_int_equal(cmr_txn_begin(g_store, &t), 0);
    for (int i = 0; i < N_SYNTH; i++) {
        char uid[64], pid[32];
        snprintf(uid, sizeof uid, "1.2.826.0.1.3680043.10.999.%d", i + 1);
        snprintf(pid, sizeof pid, "SYN%04d", i / 2); /* two studies per patient */
        int kind = i % 8;
        assert_int_equal(cmr_model_encode_text(m, synth_impressions[kind], tv), 0);
        for (unsigned d = 0; d < dim; d++)
            iv[d] = tv[d] + 0.05f * test_gauss(&rng);
        cmr_diagnosis dx = {.code = synth_dx[kind], .system = "ICD-10"};
        const char *src[1] = {"/nonexistent/cmrsearch-test/study"};
        cmr_case c = {.study_uid = uid, .study_date = 20100101 + (i % 12) * 100 + (i / 12) * 10000, .site = i % 2 ? "Northgate" : "Riverside",
                      .sex = i % 3 ? 'F' : 'M', .age_years = 30 + i, .views = CMR_VIEW_CINE_SAX | CMR_VIEW_LGE_SAX,
                      .n_diagnoses = 1, .diagnoses = &dx, .impression = synth_impressions[kind], .n_sources = 1,
                      .sources = src};
        assert_int_equal(cmr_store_patient_key(g_store, pid, c.patient_key), 0);
        c.has_patient_key = 1;
        OK(cmr_txn_put(t, &c, iv, tv, i == 0 ? &g_synth_case : NULL));
    }
    assert_int_equal(cmr_txn_commit(t), 0);
    free(tv);
    free(iv);
    cmr_model_close(m);

    cmr_server_config cfg = {.listen = "127.0.0.1:0", .model_dir = CMR_MODEL_DIR, .rate = -1,
                             .max_body = (size_t)64 << 20};
    /* The cli's parser, as `cmrsearch serve` passes it. */
    cfg.where_parse = cmr_where_parse_owned;
    cfg.where_free = cmr_where_owner_free;
    OK(cmr_server_start(g_store, &cfg, &g_srv));
    assert_true(cmr_server_port(g_srv) > 0);

    char tokens[4096];
    snprintf(tokens, sizeof tokens, "%s/tokens", g_dir);
    FILE *f = fopen(tokens, "w");
    fprintf(f, "# id:secret\n%s\nother:another-secret-0000000\n", TOKEN);
    fclose(f);
    chmod(tokens, 0600);
    cmr_server_config strict = {.listen = "127.0.0.1:0", .token_file = tokens, .rate = 1, .burst = 4,
                                .max_body = 65536};
    OK(cmr_server_start(g_store, &strict, &g_strict));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cmr_server_stop(g_strict);
    cmr_server_stop(g_srv);
    cmr_store_close(g_store);
    test_rmtree(g_dir);
    free(g_dir);
    free(g_db);
    free(g_archive);
    free(g_study_dir);
    return 0;
}

/* ---- the endpoints ------------------------------------------------------------ */

static void test_health_version(void **state)
{
    (void)state;
    unsigned port = cmr_server_port(g_srv);
    json_t *h = get_json(port, "/api/v1/health", 200);
    assert_string_equal(json_string_value(json_object_get(h, "status")), "ok");
    assert_int_equal(json_integer_value(json_object_get(h, "cases")), N_SYNTH + 2);
    json_t *model = json_object_get(h, "model");
    assert_true(json_integer_value(json_object_get(model, "dim")) > 0);
    assert_int_equal(strlen(json_string_value(json_object_get(model, "hash"))), 64);
    assert_true(json_integer_value(json_object_get(h, "generation")) > 0);
    json_decref(h);
    json_t *v = get_json(port, "/api/v1/version", 200);
    assert_string_equal(json_string_value(json_object_get(v, "name")), "cmrsearch");
    assert_string_equal(json_string_value(json_object_get(v, "api")), "v1");
    json_decref(v);
}

static void test_page(void **state)
{
    (void)state;
    unsigned port = cmr_server_port(g_srv);
    reply r;
    assert_int_equal(http(port, "GET", "/", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "text/html"));
    assert_true(r.len > 100);
    assert_non_null(strstr(r.body, "<"));
    reply_free(&r);
    assert_int_equal(http(port, "GET", "/app.js", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "javascript"));
    reply_free(&r);
    /* No file is ever looked up by path. */
    expect_error(port, "/../../etc/passwd", 404, NULL);
    expect_error(port, "/index.html/../app.js", 404, NULL);
}

static void test_search_text(void **state)
{
    (void)state;
    unsigned port = cmr_server_port(g_srv);
    json_t *doc = get_json(port, "/api/v1/search?text=asymmetric%20septal%20hypertrophy%20with%20LGE&k=5", 200);
    json_t *res = json_object_get(doc, "results");
    assert_int_equal(json_array_size(res), 5);
    json_t *first = json_array_get(res, 0);
    assert_int_equal(json_integer_value(json_object_get(first, "rank")), 1);
    const char *imp = json_string_value(json_object_get(json_object_get(first, "case"), "impression"));
    assert_non_null(imp);
    /* The phrase is near the HCM impressions: the best hit is one of them. */
    assert_non_null(strstr(imp, "hypertrophy"));
    assert_null(json_object_get(json_object_get(first, "case"), "sources"));
    assert_null(json_object_get(json_object_get(first, "case"), "patient_key"));
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "query"), "kind")), "text");
    double prev = 2;
    for (size_t i = 0; i < json_array_size(res); i++) {
        double sc = json_real_value(json_object_get(json_array_get(res, i), "score"));
        assert_true(sc <= prev + 1e-6);
        prev = sc;
    }
    json_decref(doc);

    /* Paging: offset 5 continues where the first page stopped. */
    json_t *p1 = get_json(port, "/api/v1/search?text=dilated%20left%20ventricle&k=10", 200);
    json_t *p2 = get_json(port, "/api/v1/search?text=dilated%20left%20ventricle&k=5&offset=5", 200);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(p1, "results"), i + 5), "id")),
                         json_integer_value(json_object_get(json_array_get(json_object_get(p2, "results"), i), "id")));
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(p2, "results"), 0), "rank")), 6);
    json_decref(p1);
    json_decref(p2);

    /* A filter, and one result per patient. */
    doc = get_json(port, "/api/v1/search?text=cardiomyopathy&k=50&where=sex%20%3D%20M&one_per_patient=true", 200);
    res = json_object_get(doc, "results");
    assert_true(json_array_size(res) > 0);
    for (size_t i = 0; i < json_array_size(res); i++)
        assert_string_equal(json_string_value(json_object_get(json_object_get(json_array_get(res, i), "case"), "sex")),
                            "M");
    json_decref(doc);

    /* The phrase used by the query-log test. */
    doc = get_json(port, "/api/v1/search?text=concentric%20hypertrophy%20Zyxwvut-7781%20with%20patchy%20LGE", 200);
    json_decref(doc);
}

static void test_search_errors(void **state)
{
    (void)state;
    unsigned port = cmr_server_port(g_srv);
    expect_error(port, "/api/v1/search?text=x&k=0", 400, "k");
    expect_error(port, "/api/v1/search?text=x&k=201", 400, "k");
    expect_error(port, "/api/v1/search?text=x&k=ten", 400, "k");
    expect_error(port, "/api/v1/search?text=x&k=-1", 400, "k");
    expect_error(port, "/api/v1/search?text=x&offset=999&k=10", 400, "offset");
    expect_error(port, "/api/v1/search?text=x&where=diagnosis%20%3E%3E%20I42", 400, "where");
    expect_error(port, "/api/v1/search?text=x&where=colour%20%3D%20red", 400, "where");
    expect_error(port, "/api/v1/search?text=x&bogus=1", 400, "bogus");
    expect_error(port, "/api/v1/search?text=x&k=3&k=4", 400, "more than once");
    expect_error(port, "/api/v1/search?text=x&case=3", 400, "exactly one");
    expect_error(port, "/api/v1/search", 400, "exactly one");
    expect_error(port, "/api/v1/search?text=%20%20", 400, "text");
    expect_error(port, "/api/v1/search?text=a%01b", 400, "text");
    expect_error(port, "/api/v1/search?text=x&w_image=0&w_text=0", 400, "weight");
    expect_error(port, "/api/v1/search?text=x&w_image=2", 400, "w_image");
    expect_error(port, "/api/v1/search?text=x&one_per_patient=maybe", 400, "one_per_patient");
    expect_error(port, "/api/v1/search?case=999999", 404, NULL);
    expect_error(port, "/api/v1/nothing", 404, NULL);
    /* DNS rebinding: a page of another site that resolves to 127.0.0.1. */
    reply rb;
    assert_int_equal(http(port, "GET", "/api/v1/health", "Host: evil.example:8080\r\n", NULL, 0, &rb), 0);
    assert_int_equal(rb.status, 403);
    assert_non_null(strstr(rb.body, "forbidden"));
    reply_free(&rb);
    assert_int_equal(http(port, "GET", "/api/v1/health", "Host: localhost:8080\r\n", NULL, 0, &rb), 0);
    assert_int_equal(rb.status, 200);
    reply_free(&rb);
    reply r;
    assert_int_equal(http(port, "POST", "/api/v1/health", NULL, "x", 1, &r), 0);
    assert_int_equal(r.status, 405);
    reply_free(&r);
}

static void test_search_case(void **state)
{
    (void)state;
    unsigned port = cmr_server_port(g_srv);
    char path[128];
    snprintf(path, sizeof path, "/api/v1/search?case=%llu&k=10", (unsigned long long)g_synth_case);
    json_t *doc = get_json(port, path, 200);
    json_t *res = json_object_get(doc, "results");
    assert_true(json_array_size(res) > 0);
    for (size_t i = 0; i < json_array_size(res); i++)
        assert_int_not_equal(json_integer_value(json_object_get(json_array_get(res, i), "id")), g_synth_case);
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "query"), "kind")), "case");
    json_decref(doc);
}

static void test_case_detail(void **state)
{
    (void)state;
    unsigned port = cmr_server_port(g_srv);
    char path[128];
    snprintf(path, sizeof path, "/api/v1/cases/%llu", (unsigned long long)g_real_case);
    json_t *doc = get_json(port, path, 200);
    assert_int_equal(json_integer_value(json_object_get(doc, "id")), g_real_case);
    assert_true(json_array_size(json_object_get(doc, "views")) > 0);
    assert_true(json_is_array(json_object_get(doc, "diagnoses")));
    assert_true(json_is_array(json_object_get(doc, "findings")));
    assert_null(json_object_get(doc, "sources"));
    assert_true(json_is_true(json_object_get(doc, "images_available")));
    json_decref(doc);
    snprintf(path, sizeof path, "/api/v1/cases/%llu", (unsigned long long)g_synth_case);
    doc = get_json(port, path, 200);
    assert_true(json_is_false(json_object_get(doc, "images_available")));
    json_decref(doc);
    expect_error(port, "/api/v1/cases/999999", 404, "999999");
    expect_error(port, "/api/v1/cases/abc", 400, NULL);
    expect_error(port, "/api/v1/cases/0", 400, NULL);
    expect_error(port, "/api/v1/cases/1/secret.txt", 404, NULL);
}

static void test_images(void **state)
{
    (void)state;
    unsigned port = cmr_server_port(g_srv);
    char path[160];
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    reply r;
    for (int cine = 0; cine < 2; cine++)
        for (int pass = 0; pass < 2; pass++) { /* the second pass comes from the cache */
            snprintf(path, sizeof path, "/api/v1/cases/%llu/%s?view=cine_sax", (unsigned long long)g_real_case,
                     cine ? "cine.png" : "thumbnail.png");
            assert_int_equal(http(port, "GET", path, NULL, NULL, 0, &r), 0);
            if (r.status != 200)
                fprintf(stderr, "%s: %s\n", path, r.body);
            assert_int_equal(r.status, 200);
            assert_non_null(strstr(r.headers, "image/png"));
            assert_true(r.len > 100);
            assert_memory_equal(r.body, sig, 8);
            /* IHDR: width and height within the documented bounds. */
            unsigned w = (unsigned)((unsigned char)r.body[16] << 24 | (unsigned char)r.body[17] << 16 |
                                    (unsigned char)r.body[18] << 8 | (unsigned char)r.body[19]);
            assert_true(w > 8 && w <= (cine ? 128u : 256u));
            int animated = memmem(r.body, r.len, "acTL", 4) != NULL;
            assert_int_equal(animated, cine);
            reply_free(&r);
        }
    snprintf(path, sizeof path, "/api/v1/cases/%llu/thumbnail.png?view=sideways", (unsigned long long)g_real_case);
    expect_error(port, path, 400, "view");
    snprintf(path, sizeof path, "/api/v1/cases/%llu/thumbnail.png?view=../../etc", (unsigned long long)g_real_case);
    expect_error(port, path, 400, "view");
    snprintf(path, sizeof path, "/api/v1/cases/%llu/thumbnail.png?view=cine_2ch", (unsigned long long)g_synth_case);
    expect_error(port, path, 404, "no cine_2ch view");
    /* The synthetic case's source folder does not exist. */
    snprintf(path, sizeof path, "/api/v1/cases/%llu/thumbnail.png", (unsigned long long)g_synth_case);
    expect_error(port, path, 404, "no longer readable");
}

static void test_dashboard(void **state)
{
    (void)state;
    unsigned port = cmr_server_port(g_srv);
    json_t *p = get_json(port, "/api/v1/prompts", 200);
    json_t *list = json_object_get(p, "prompts");
    assert_int_equal(json_array_size(list), cmr_finding_bank_size());
    assert_true(strlen(json_string_value(json_object_get(json_array_get(list, 0), "phrase"))) > 3);
    json_decref(p);
    json_t *st = get_json(port, "/api/v1/stats", 200);
    assert_int_equal(json_integer_value(json_object_get(st, "cases")), N_SYNTH + 2);
    json_t *dx = json_object_get(st, "diagnoses");
    json_int_t hcm = 0;
    for (size_t i = 0; i < json_array_size(dx); i++)
        if (!strcmp(json_string_value(json_object_get(json_array_get(dx, i), "code")), "I42.1"))
            hcm = json_integer_value(json_object_get(json_array_get(dx, i), "cases"));
    assert_true(hcm >= N_SYNTH / 8);
    json_t *sites = json_object_get(st, "sites");
    assert_true(json_array_size(sites) >= 2);
    json_decref(st);
    json_t *au = get_json(port, "/api/v1/audit", 200);
    assert_true(json_is_true(json_object_get(au, "sound")));
    assert_int_equal(json_integer_value(json_object_get(au, "cases")), N_SYNTH + 2);
    assert_true(json_is_array(json_object_get(au, "findings")));
    assert_true(json_is_object(json_object_get(au, "counts")));
    json_decref(au);
    au = get_json(port, "/api/v1/audit?kinds=duplicate&min_confidence=0.9", 200);
    json_t *counts = json_object_get(au, "counts");
    assert_int_equal(json_object_size(counts), 1);
    assert_non_null(json_object_get(counts, "duplicate"));
    json_decref(au);
    /* The statistics follow the store (they are cached per generation). */
    cmr_txn *t;
    uint64_t id;
    cmr_case extra = {.study_uid = "1.2.826.0.1.3680043.10.999.9999", .site = "Elsewhere"};
    OK(cmr_txn_begin(g_store, &t));
    OK(cmr_txn_put(t, &extra, NULL, NULL, &id));
    OK(cmr_txn_commit(t));
    st = get_json(port, "/api/v1/stats", 200);
    assert_int_equal(json_integer_value(json_object_get(st, "cases")), N_SYNTH + 3);
    json_decref(st);
    OK(cmr_txn_begin(g_store, &t));
    OK(cmr_txn_delete(t, id));
    OK(cmr_txn_commit(t));
    st = get_json(port, "/api/v1/stats", 200);
    assert_int_equal(json_integer_value(json_object_get(st, "cases")), N_SYNTH + 2);
    assert_true(json_integer_value(json_object_get(st, "queries")) > 0);
    json_decref(st);
    expect_error(port, "/api/v1/audit?kinds=gossip", 400, "kinds");
    expect_error(port, "/api/v1/audit?min_confidence=2", 400, "min_confidence");
}

/* Every path of schema/openapi.json is served, with the methods it lists. */
static void test_openapi_routes(void **state)
{
    (void)state;
    unsigned port = cmr_server_port(g_srv);
    json_error_t err;
    json_t *doc = json_load_file(CMR_SOURCE_DIR "/schema/openapi.json", 0, &err);
    if (!doc)
        fail_msg("schema/openapi.json: %s (line %d)", err.text, err.line);
    json_t *paths = json_object_get(doc, "paths");
    assert_true(json_object_size(paths) >= 12);
    const char *path;
    json_t *item;
    json_object_foreach(paths, path, item)
    {
        char url[256];
        const char *brace = strstr(path, "{id}");
        if (brace)
            snprintf(url, sizeof url, "%.*s%llu%s", (int)(brace - path), path, (unsigned long long)g_real_case,
                     brace + 4);
        else
            snprintf(url, sizeof url, "%s", path);
        const char *method;
        json_t *op;
        json_object_foreach(item, method, op)
        {
            reply r;
            int post = !strcmp(method, "post");
            assert_int_equal(http(port, post ? "POST" : "GET", url, post ? "Content-Type: application/zip\r\n" : NULL,
                                  post ? "" : NULL, 0, &r), 0);
            if (r.status == 404 || r.status == 405 || r.status >= 500)
                fail_msg("%s %s: %d %s", method, url, r.status, r.body);
            reply_free(&r);
        }
    }
    json_decref(doc);
}

/* Many clients at once: every answer complete and correct. */
typedef struct burst {
    unsigned port;
    int id, failures;
} burst;

static void *burst_main(void *arg)
{
    burst *b = arg;
    static const char *const q[] = {"apical%20hypertrophy", "myocarditis", "dilated%20ventricle", "amyloid"};
    for (int i = 0; i < 12; i++) {
        char path[160];
        reply r;
        if ((b->id + i) % 3 == 2)
            snprintf(path, sizeof path, "/api/v1/search?case=%llu&k=7", (unsigned long long)g_synth_case + i % 5);
        else
            snprintf(path, sizeof path, "/api/v1/search?text=%s&k=7&offset=%d", q[(b->id + i) % 4], i % 3);
        if (http(b->port, "GET", path, NULL, NULL, 0, &r)) {
            b->failures++;
            continue;
        }
        json_t *doc = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
        if (!doc || json_array_size(json_object_get(doc, "results")) != 7)
            b->failures++;
        json_decref(doc);
        reply_free(&r);
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    enum { N = 12 };
    pthread_t t[N];
    burst b[N];
    for (int i = 0; i < N; i++) {
        b[i] = (burst){.port = cmr_server_port(g_srv), .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, burst_main, &b[i]), 0);
    }
    int failures = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        failures += b[i].failures;
    }
    assert_int_equal(failures, 0);
}

/* ---- security -------------------------------------------------------------------------- */

static void test_tokens_limits(void **state)
{
    (void)state;
    unsigned port = cmr_server_port(g_strict);
    reply r;
    assert_int_equal(http(port, "GET", "/api/v1/health", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.headers, "WWW-Authenticate: Bearer"));
    reply_free(&r);
    assert_int_equal(http(port, "GET", "/api/v1/health", "Authorization: Bearer 0123456789abcdef-secreT\r\n", NULL, 0,
                          &r), 0);
    assert_int_equal(r.status, 401);
    reply_free(&r);
    assert_int_equal(http(port, "GET", "/api/v1/health", "Authorization: Bearer " SECRET "\r\n", NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    /* The page itself needs no token. */
    assert_int_equal(http(port, "GET", "/", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    /* Oversized body: refused from its Content-Length. */
    size_t big = 200000;
    char *body = calloc(1, big);
    assert_int_equal(http(port, "POST", "/api/v1/search/study",
                          "Authorization: Bearer " SECRET "\r\nContent-Type: application/zip\r\n", body, big, &r), 0);
    assert_int_equal(r.status, 413);
    reply_free(&r);
    free(body);
    /* Rate: burst 4 at 1/s; the bucket has been drawn from above, so a run
     * of 6 requests must meet a 429 with Retry-After. */
    int limited = 0;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(http(port, "GET", "/api/v1/version", "Authorization: Bearer " SECRET "\r\n", NULL, 0, &r), 0);
        if (r.status == 429) {
            limited++;
            assert_non_null(strstr(r.headers, "Retry-After"));
            assert_non_null(strstr(r.body, "too_many_requests"));
        } else {
            assert_int_equal(r.status, 200);
        }
        reply_free(&r);
    }
    assert_true(limited >= 1);
    /* Guessing tokens draws on the address's bucket: 429 comes soon. */
    int slowed = 0;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(http(port, "GET", "/api/v1/version", "Authorization: Bearer guess-guess-guess-guess\r\n", NULL,
                              0, &r), 0);
        assert_true(r.status == 401 || r.status == 429);
        slowed += r.status == 429;
        reply_free(&r);
    }
    assert_true(slowed >= 1);
    /* Another token has its own bucket. */
    assert_int_equal(http(port, "GET", "/api/v1/version", "Authorization: Bearer another-secret-0000000\r\n", NULL, 0,
                          &r), 0);
    assert_int_equal(r.status, 200);
    reply_free(&r);

    /* Any address but loopback refuses to start without a token file. */
    cmr_server *s = NULL;
    cmr_server_config open_cfg = {.listen = "0.0.0.0:0"};
    assert_int_equal(cmr_server_start(g_store, &open_cfg, &s), CMR_EINVAL);
    assert_null(s);
    assert_non_null(strstr(cmr_errmsg(), "--token-file"));
    cmr_server_config v6 = {.listen = "[::]:0"};
    assert_int_equal(cmr_server_start(g_store, &v6, &s), CMR_EINVAL);
    cmr_server_config bad = {.listen = "example.org:80"};
    assert_int_equal(cmr_server_start(g_store, &bad, &s), CMR_EINVAL);
    char tokens[4096];
    snprintf(tokens, sizeof tokens, "%s/weak-tokens", g_dir);
    FILE *f = fopen(tokens, "w");
    fprintf(f, "weak:short\n");
    fclose(f);
    chmod(tokens, 0600);
    cmr_server_config weak = {.listen = "127.0.0.1:0", .token_file = tokens};
    assert_int_equal(cmr_server_start(g_store, &weak, &s), CMR_EFORMAT);
}

/* ---- the query log -------------------------------------------------------------------- */

static int contains(const char *path, const char *needle)
{
    unsigned char *data;
    size_t n;
    read_file(path, &data, &n);
    int found = memmem(data, n, needle, strlen(needle)) != NULL;
    free(data);
    return found;
}

static void test_query_log(void **state)
{
    (void)state;
    /* Stopping the server writes what is still queued. */
    uint64_t written_before = cmr_server_logged(g_srv);
    (void)written_before;
    assert_int_equal(cmr_server_stop(g_srv), 0);
    g_srv = NULL;
    cmr_querylog_entry *e = NULL;
    size_t n = 0;
    assert_int_equal(cmr_querylog_read(g_store, 0, 0, &e, &n), 0);
    /* Every search request above, answered or refused (the strict server's
     * 413 comes before any query is read and is not one). */
    /* 5 text searches, 17 refused or failed ones, 1 case search, 6 uploads,
     * from the route check one search and one empty upload, 12 x 12
     * concurrent ones, and 4 case views. */
    if (n != 31 + 144 + 4)
        fail_msg("%zu query-log entries", n);
    uint8_t want[8];
    assert_int_equal(cmr_querylog_text_hash(g_store, PHRASE, want), 0);
    int found_text = 0, found_case = 0, found_study = 0, found_filter = 0, found_refused = 0,
        found_view = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(e[i].seq, i + 1);
        assert_string_equal(e[i].who, "local");
        assert_true(e[i].time_us > 1600000000000000LL);
        if (!strcmp(e[i].kind, "text") && e[i].text_len == strlen(PHRASE) && !memcmp(e[i].text_hash, want, 8)) {
            found_text = 1;
            assert_int_equal(e[i].status, 200);
            assert_int_equal(e[i].k, 10);
            assert_true(e[i].n_results > 0);
            assert_true(e[i].latency_us > 0);
        }
        found_case |= !strcmp(e[i].kind, "case") && e[i].case_id == g_synth_case && e[i].status == 200;
        found_study |= !strcmp(e[i].kind, "study") && e[i].n_files > 0 && e[i].status == 200;
        found_filter |= !strcmp(e[i].filters, "sex,one_per_patient");
        found_refused |= !strcmp(e[i].kind, "text") && e[i].status == 400;
        found_view |= !strcmp(e[i].kind, "case_view") && e[i].case_id == g_real_case && e[i].status == 200;
    }
    assert_true(found_text);
    assert_true(found_case);
    assert_true(found_study);
    assert_true(found_filter);
    assert_true(found_refused);
    assert_true(found_view);
    free(e);
    /* The phrase itself is nowhere in the store's file. */
    char data[4096];
    snprintf(data, sizeof data, "%s/data.mdb", g_db);
    assert_false(contains(data, "Zyxwvut-7781"));
    /* And the command prints it. */
    char *argv[] = {"cmrsearch", "querylog", "--db", g_db, "--json", NULL};
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_int_equal(cmr_cli_run(5, argv, out, stderr), 0);
    fclose(out);
    json_t *doc = json_loads(buf, 0, NULL);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_object_get(doc, "n")), n);
    json_decref(doc);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_version), cmocka_unit_test(test_page),
        cmocka_unit_test(test_search_text),    cmocka_unit_test(test_search_errors),
        cmocka_unit_test(test_search_case),    cmocka_unit_test(test_case_detail),
        cmocka_unit_test(test_images),         cmocka_unit_test(test_dashboard),
        cmocka_unit_test(test_openapi_routes), cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_upload),
        cmocka_unit_test(test_tokens_limits),
        cmocka_unit_test(test_query_log),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
