/* cmrsearch serve: uploaded studies (a zip, multipart DICOM) and the
 * hostile or malformed uploads the server must refuse; part of test_server.
 * Also the HTTP client the tests share. */
#include <arpa/inet.h>
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "test_server.h"
#include "test_util.h"

/* ---- a minimal HTTP client -------------------------------------------------- */

void reply_free(reply *r)
{
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}

int http(unsigned port, const char *method, const char *path, const char *extra_headers, const void *body,
                size_t body_len, reply *out)
{
    memset(out, 0, sizeof *out);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    char head[2048];
    int own_host = extra_headers && strstr(extra_headers, "Host: ");
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\n%sConnection: close\r\n%s", method, path,
                     own_host ? "" : "Host: 127.0.0.1\r\n", extra_headers ? extra_headers : "");
    if (body)
        n += snprintf(head + n, sizeof head - n, "Content-Length: %zu\r\n", body_len);
    n += snprintf(head + n, sizeof head - n, "\r\n");
    if (write(fd, head, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    /* A server may answer (413) before reading the whole body: stop writing then. */
    for (size_t off = 0; body && off < body_len;) {
        ssize_t w = send(fd, (const char *)body + off, body_len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 4096 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.%*d %d", &out->status) != 1) {
        free(buf);
        return -1;
    }
    out->headers = strndup(buf, (size_t)(sep - buf));
    out->len = len - (size_t)(sep + 4 - buf);
    out->body = malloc(out->len + 1);
    memcpy(out->body, sep + 4, out->len);
    out->body[out->len] = '\0';
    free(buf);
    return 0;
}

json_t *get_json(unsigned port, const char *path, int want_status)
{
    reply r;
    assert_int_equal(http(port, "GET", path, NULL, NULL, 0, &r), 0);
    if (r.status != want_status)
        fprintf(stderr, "GET %s: %d %s\n", path, r.status, r.body);
    assert_int_equal(r.status, want_status);
    assert_non_null(strstr(r.headers, "application/json"));
    json_error_t err;
    json_t *doc = json_loads(r.body, 0, &err);
    assert_non_null(doc);
    if (want_status >= 400) {
        assert_true(json_is_string(json_object_get(doc, "error")));
        assert_true(json_is_string(json_object_get(doc, "detail")));
    }
    reply_free(&r);
    return doc;
}

void expect_error(unsigned port, const char *path, int status, const char *detail_part)
{
    json_t *doc = get_json(port, path, status);
    const char *detail = json_string_value(json_object_get(doc, "detail"));
    if (detail_part && !strstr(detail, detail_part))
        fail_msg("GET %s: detail '%s' lacks '%s'", path, detail, detail_part);
    json_decref(doc);
}

/* ---- uploads ------------------------------------------------------------------------ */

typedef struct membuf {
    unsigned char *p;
    size_t len, cap;
} membuf;

static la_ssize_t mem_write(struct archive *a, void *user, const void *buf, size_t n)
{
    (void)a;
    membuf *m = user;
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->p = realloc(m->p, m->cap);
    }
    memcpy(m->p + m->len, buf, n);
    m->len += n;
    return (la_ssize_t)n;
}

static void add_member(struct archive *a, const char *name, const void *data, size_t n)
{
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, (la_int64_t)n);
    assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
    assert_int_equal(archive_write_data(a, data, n), (la_ssize_t)n);
    archive_entry_free(e);
}

void read_file(const char *path, unsigned char **data, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    *data = malloc(*n ? *n : 1);
    assert_int_equal(fread(*data, 1, *n, f), *n);
    fclose(f);
}

/* Every file under dir, relative names. */
static void walk(const char *dir, const char *rel, void (*fn)(void *, const char *, const char *), void *user)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[4096], r[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        snprintf(r, sizeof r, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        struct stat st;
        stat(p, &st);
        if (S_ISDIR(st.st_mode))
            walk(p, r, fn, user);
        else
            fn(user, p, r);
    }
    closedir(d);
}

static void zip_one(void *user, const char *path, const char *rel)
{
    unsigned char *data;
    size_t n;
    read_file(path, &data, &n);
    add_member(user, rel, data, n);
    free(data);
}

static membuf make_zip(const char *dir, const char *hostile_name)
{
    membuf m = {0};
    struct archive *a = archive_write_new();
    archive_write_set_format_zip(a);
    assert_int_equal(archive_write_open(a, &m, NULL, mem_write, NULL), ARCHIVE_OK);
    if (dir)
        walk(dir, "", zip_one, a);
    if (hostile_name)
        add_member(a, hostile_name, "gotcha", 6);
    archive_write_close(a);
    archive_write_free(a);
    return m;
}

static void multipart_one(void *user, const char *path, const char *rel)
{
    membuf *m = user;
    unsigned char *data;
    size_t n;
    read_file(path, &data, &n);
    char head[512];
    int h = snprintf(head, sizeof head,
                     "--XyZb0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
                     "Content-Type: application/dicom\r\n\r\n", rel);
    mem_write(NULL, m, head, (size_t)h);
    mem_write(NULL, m, data, n);
    mem_write(NULL, m, "\r\n", 2);
    free(data);
}

static void check_study_results(const reply *r, size_t want_files)
{
    if (r->status != 200)
        fprintf(stderr, "study upload: %d %s\n", r->status, r->body);
    assert_int_equal(r->status, 200);
    json_t *doc = json_loads(r->body, 0, NULL);
    assert_non_null(doc);
    json_t *q = json_object_get(doc, "query");
    assert_string_equal(json_string_value(json_object_get(q, "kind")), "study");
    assert_int_equal(json_integer_value(json_object_get(q, "files")), want_files);
    json_t *res = json_object_get(doc, "results");
    assert_true(json_array_size(res) > 0);
    /* The uploaded study is the archive's: its stored twin ranks first in the
     * image space (the requests ask for it alone: the default fusion also
     * weighs the archive's impressions, docs/searching.md). */
    json_t *top = json_object_get(json_array_get(res, 0), "case");
    assert_true(json_integer_value(json_object_get(top, "id")) <= 2);
    json_decref(doc);
}

static size_t count_files(const char *dir)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        stat(p, &st);
        n += S_ISDIR(st.st_mode) ? count_files(p) : 1;
    }
    if (d)
        closedir(d);
    return n;
}

static size_t upload_dirs_left(void)
{
    size_t n = 0;
    DIR *d = opendir(getenv("TMPDIR"));
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += !strncmp(e->d_name, "cmrsearch-upload-", 17);
    if (d)
        closedir(d);
    return n;
}

void test_upload(void **state)
{
    (void)state;
    unsigned port = cmr_server_port(g_srv);
    size_t before = upload_dirs_left(), n_files = count_files(g_study_dir);
    assert_int_equal(before, 0);
    membuf z = make_zip(g_study_dir, NULL);
    reply r;
    assert_int_equal(http(port, "POST", "/api/v1/search/study?k=3&w_image=1&w_text=0", "Content-Type: application/zip\r\n", z.p, z.len, &r),
                     0);
    check_study_results(&r, n_files);
    reply_free(&r);
    free(z.p);

    membuf mp = {0};
    walk(g_study_dir, "", multipart_one, &mp);
    mem_write(NULL, &mp, "--XyZb0undary--\r\n", 17);
    assert_int_equal(http(port, "POST", "/api/v1/search/study?k=3&w_image=1&w_text=0",
                          "Content-Type: multipart/form-data; boundary=XyZb0undary\r\n", mp.p, mp.len, &r),
                     0);
    check_study_results(&r, n_files);
    reply_free(&r);
    free(mp.p);

    /* Hostile and malformed uploads. */
    membuf evil = make_zip(NULL, "../../escaped.dcm");
    assert_int_equal(http(port, "POST", "/api/v1/search/study", "Content-Type: application/zip\r\n", evil.p, evil.len, &r),
                     0);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, ".."));
    reply_free(&r);
    free(evil.p);
    char escaped[4096];
    /* ../../ from an upload folder under TMPDIR lands in the test folder. */
    snprintf(escaped, sizeof escaped, "%s/escaped.dcm", g_dir);
    assert_int_not_equal(access(escaped, F_OK), 0);
    snprintf(escaped, sizeof escaped, "%s/escaped.dcm", getenv("TMPDIR"));
    assert_int_not_equal(access(escaped, F_OK), 0);
    evil = make_zip(NULL, "/etc/cmrsearch-abs.dcm");
    assert_int_equal(http(port, "POST", "/api/v1/search/study", "Content-Type: application/zip\r\n", evil.p, evil.len, &r),
                     0);
    assert_int_equal(r.status, 400);
    reply_free(&r);
    free(evil.p);
    assert_int_equal(http(port, "POST", "/api/v1/search/study", "Content-Type: application/zip\r\n", "PK\x03\x04junk", 8, &r),
                     0);
    assert_int_equal(r.status, 400);
    reply_free(&r);
    assert_int_equal(http(port, "POST", "/api/v1/search/study", "Content-Type: text/plain\r\n", "hello", 5, &r), 0);
    assert_int_equal(r.status, 415);
    reply_free(&r);
    assert_int_equal(http(port, "GET", "/api/v1/search/study", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 405);
    reply_free(&r);
    /* Nothing of the uploads is left behind. */
    assert_int_equal(upload_dirs_left(), before);
}

