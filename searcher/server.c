/* cmrsearch serve: the daemon, routing, request bodies, responses,
 * parameters, the worker pool and the query-log writer.  Tokens, rate limits
 * and the listening address are in server_auth.c; the endpoints in
 * server_api.c, server_search.c and server_image.c. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server_internal.h"

#define DEFAULT_LISTEN "127.0.0.1:8080"
#define DEFAULT_MAX_BODY ((size_t)256 << 20)
#define LOG_QUEUE_MAX 65536 /* entries waiting for the writer; beyond this they are counted as dropped */

int64_t srv_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- responses -------------------------------------------------------------- */

void srv_json(srv_response *r, unsigned status, json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text) {
        static const char oom[] = "{\"error\":\"internal\",\"detail\":\"out of memory\"}";
        r->status = 500;
        r->type = "application/json";
        r->body = (uint8_t *)oom;
        r->len = sizeof oom - 1;
        r->is_static = 1;
        return;
    }
    r->status = status;
    r->type = "application/json";
    r->body = (uint8_t *)text;
    r->len = strlen(text);
    r->is_static = 0;
}

static const char *status_name(unsigned status)
{
    switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 413: return "payload_too_large";
    case 415: return "unsupported_media_type";
    case 429: return "too_many_requests";
    case 503: return "unavailable";
    default: return "internal";
    }
}

void srv_error(srv_response *r, unsigned status, const char *fmt, ...)
{
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    srv_json(r, status, json_pack("{s:s, s:o}", "error", status_name(status), "detail", cmr_json_text(detail)));
}

void srv_fail(srv_response *r, int code, const char *what)
{
    unsigned status;
    switch (code) {
    case CMR_EINVAL:
    case CMR_EFORMAT:
    case CMR_EUNSUPPORTED:
        status = 400;
        break;
    case CMR_ENOTFOUND:
        status = 404;
        break;
    default:
        status = 500;
    }
    const char *msg = cmr_errmsg();
    srv_error(r, status, "%s%s%s", what ? what : "", what && *msg ? ": " : "", *msg ? msg : cmr_strerror(code));
}

/* ---- parameters ------------------------------------------------------------- */

typedef struct param_check {
    const char *const *allowed;
    const char *bad;
    char dup[64];
} param_check;

static enum MHD_Result check_one(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    (void)value;
    param_check *pc = cls;
    size_t i;
    for (i = 0; pc->allowed[i]; i++)
        if (!strcmp(pc->allowed[i], key))
            break;
    if (!pc->allowed[i]) {
        pc->bad = key;
        return MHD_NO;
    }
    /* Bit i of the seen mask lives in dup[] as a simple counter per name. */
    if (pc->dup[i]++) {
        pc->bad = NULL;
        pc->dup[63] = (char)(i + 1);
        return MHD_NO;
    }
    return MHD_YES;
}

int srv_check_params(srv_request *q, srv_response *r, const char *const *allowed)
{
    param_check pc = {.allowed = allowed};
    MHD_get_connection_values(q->conn, MHD_GET_ARGUMENT_KIND, check_one, &pc);
    if (pc.bad) {
        char name[48];
        size_t n = 0;
        /* The name is request text: printable ASCII only, shortened. */
        for (const char *p = pc.bad; *p && n < sizeof name - 1; p++)
            name[n++] = isprint((unsigned char)*p) ? *p : '?';
        name[n] = '\0';
        srv_error(r, 400, "unknown query parameter '%s'", name);
        return -1;
    }
    if (pc.dup[63]) {
        srv_error(r, 400, "query parameter '%s' is given more than once", allowed[pc.dup[63] - 1]);
        return -1;
    }
    return 0;
}

const char *srv_param(srv_request *q, const char *name)
{
    return MHD_lookup_connection_value(q->conn, MHD_GET_ARGUMENT_KIND, name);
}

int srv_param_uint(srv_request *q, srv_response *r, const char *name, uint64_t min, uint64_t max, uint64_t dflt,
                   uint64_t *out)
{
    const char *v = srv_param(q, name);
    *out = dflt;
    if (!v)
        return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (!isdigit((unsigned char)*v) || *end || errno || x < min || x > max) {
        srv_error(r, 400, "%s: expected a whole number from %llu to %llu", name, (unsigned long long)min,
                  (unsigned long long)max);
        return -1;
    }
    *out = x;
    return 0;
}

/* ---- workers ----------------------------------------------------------------- */

srv_worker *srv_worker_take(cmr_server *s)
{
    if (!s->n_workers)
        return NULL;
    if (!s->n_models)
        return &s->workers[0]; /* no model: the searcher is shared */
    pthread_mutex_lock(&s->model_lock);
    /* First come, first served: under overload a condition variable alone
     * let some requests wait forever while later ones went ahead (one of
     * 1,862 waited over 30 s with 100 clients). */
    uint64_t ticket = s->worker_next_ticket++;
    srv_worker *w = NULL;
    for (;;) {
        if (ticket == s->worker_serving)
            for (unsigned i = 0; i < s->n_workers && !w; i++)
                if (!s->worker_busy[i]) {
                    s->worker_busy[i] = 1;
                    w = &s->workers[i];
                }
        if (w)
            break;
        pthread_cond_wait(&s->model_cond, &s->model_lock);
    }
    s->worker_serving++;
    pthread_cond_broadcast(&s->model_cond);
    pthread_mutex_unlock(&s->model_lock);
    return w;
}

void srv_worker_give(cmr_server *s, srv_worker *w)
{
    if (!w || !s->n_models)
        return;
    pthread_mutex_lock(&s->model_lock);
    s->worker_busy[w - s->workers] = 0;
    pthread_cond_broadcast(&s->model_cond);
    pthread_mutex_unlock(&s->model_lock);
}

/* ---- the query log writer ------------------------------------------------------------ */

static void *log_main(void *arg)
{
    cmr_server *s = arg;
    pthread_mutex_lock(&s->log_lock);
    for (;;) {
        while (!s->log_len && !s->log_stop)
            pthread_cond_wait(&s->log_cond, &s->log_lock);
        if (!s->log_len && s->log_stop)
            break;
        cmr_querylog_entry *batch = s->log_queue;
        size_t n = s->log_len;
        s->log_queue = NULL;
        s->log_len = s->log_cap = 0;
        pthread_mutex_unlock(&s->log_lock);
        int rc = cmr_querylog_append(s->store, batch, n);
        if (rc)
            fprintf(stderr, "cmrsearch: serve: query log: %s\n", cmr_errmsg());
        free(batch);
        pthread_mutex_lock(&s->log_lock);
        if (rc)
            s->log_failed += n;
        else
            s->log_written += n;
        pthread_cond_broadcast(&s->log_cond);
    }
    pthread_mutex_unlock(&s->log_lock);
    return NULL;
}

static void log_push(cmr_server *s, const cmr_querylog_entry *e)
{
    pthread_mutex_lock(&s->log_lock);
    if (s->log_len == s->log_cap) {
        size_t nc = s->log_cap ? 2 * s->log_cap : 64;
        cmr_querylog_entry *p = s->log_len >= LOG_QUEUE_MAX ? NULL : realloc(s->log_queue, nc * sizeof *p);
        if (!p) {
            s->log_dropped++;
            fprintf(stderr, "cmrsearch: serve: query log: %llu entries could not be queued\n",
                    (unsigned long long)s->log_dropped);
            pthread_mutex_unlock(&s->log_lock);
            return;
        }
        s->log_queue = p;
        s->log_cap = nc;
    }
    s->log_queue[s->log_len++] = *e;
    pthread_cond_signal(&s->log_cond);
    pthread_mutex_unlock(&s->log_lock);
}

uint64_t cmr_server_logged(const cmr_server *s)
{
    cmr_server *m = (cmr_server *)s;
    pthread_mutex_lock(&m->log_lock);
    uint64_t n = m->log_written;
    pthread_mutex_unlock(&m->log_lock);
    return n;
}

/* ---- routing --------------------------------------------------------------------------- */

/* "/api/v1/cases/123" and "/api/v1/cases/123/thumbnail.png": the id and the rest. */
static int parse_case_path(const char *rest, uint64_t *id, const char **tail)
{
    if (!isdigit((unsigned char)*rest) || *rest == '0')
        return -1;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(rest, &end, 10);
    if (errno || end - rest > 19)
        return -1;
    *id = x;
    *tail = end;
    return 0;
}

static void dispatch(cmr_server *s, srv_request *q, srv_response *r)
{
    const char *url = q->url;
    int get = !strcmp(q->method, "GET") || !strcmp(q->method, "HEAD");
    int post = !strcmp(q->method, "POST");
    for (const cmr_web_asset *a = cmr_web_assets; a->url; a++)
        if (!strcmp(url, a->url) || (!strcmp(a->url, "/") && !strcmp(url, "/index.html"))) {
            if (!get) {
                srv_error(r, 405, "%s takes GET", a->url);
                return;
            }
            r->status = 200;
            r->type = a->type;
            r->body = (uint8_t *)a->data;
            r->len = a->len;
            r->is_static = 1;
            r->cache_seconds = 60;
            return;
        }
    if (strncmp(url, "/api/v1/", 8)) {
        srv_error(r, 404, "no such page (the API is under /api/v1/)");
        return;
    }
    const char *p = url + 8;
    if (!srv_host_ok(s, q)) {
        srv_error(r, 403, "the Host header does not name this machine (the API without tokens answers only "
                          "requests to localhost or its own address)");
        return;
    }
    int denied = srv_authorise(s, q, r);
    double retry = 0;
    if (!srv_rate_ok(s, q, &retry)) {
        if (denied && !r->is_static)
            free(r->body); /* the 401 gives way to the 429 */
        *r = (srv_response){0};
        srv_error(r, 429, "too many requests from this client; retry in %.1f s", retry);
        return;
    }
    if (denied)
        return;
    static const struct {
        const char *path;
        void (*fn)(cmr_server *, srv_request *, srv_response *);
        int post;
    } routes[] = {
        {"health", srv_health, 0}, {"version", srv_version, 0}, {"search", srv_search, 0},
        {"search/study", srv_search_study, 1}, {"prompts", srv_prompts, 0}, {"stats", srv_stats, 0},
        {"audit", srv_audit, 0},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (!strcmp(p, routes[i].path)) {
            if (routes[i].post ? !post : !get) {
                srv_error(r, 405, "%s takes %s", url, routes[i].post ? "POST" : "GET");
                return;
            }
            routes[i].fn(s, q, r);
            return;
        }
    if (!strncmp(p, "cases/", 6)) {
        uint64_t id;
        const char *tail;
        if (parse_case_path(p + 6, &id, &tail)) {
            srv_error(r, 400, "a case id is a whole number from 1");
            return;
        }
        if (!get) {
            srv_error(r, 405, "cases take GET");
            return;
        }
        if (!*tail)
            srv_case(s, q, r, id);
        else if (!strcmp(tail, "/thumbnail.png"))
            srv_image(s, q, r, id, 0);
        else if (!strcmp(tail, "/cine.png"))
            srv_image(s, q, r, id, 1);
        else
            srv_error(r, 404, "no such resource of a case (thumbnail.png, cine.png)");
        return;
    }
    srv_error(r, 404, "no such API endpoint");
}

static enum MHD_Result respond(srv_request *q, srv_response *r)
{
    struct MHD_Response *resp = r->is_static
                                    ? MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_PERSISTENT)
                                    : MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        if (!r->is_static)
            free(r->body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->type ? r->type : "application/octet-stream");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; frame-ancestors 'none'");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    if (r->cache_seconds) {
        char cc[48];
        snprintf(cc, sizeof cc, "private, max-age=%u", r->cache_seconds);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, cc);
    } else {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    }
    if (r->status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (r->status == 429)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result ret = MHD_queue_response(q->conn, r->status, resp);
    MHD_destroy_response(resp);
    q->entry.status = (uint16_t)r->status;
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    cmr_server *s = cls;
    srv_request *q = *con_cls;
    srv_response r = {0};
    if (!q) {
        if (!(q = calloc(1, sizeof *q)))
            return MHD_NO;
        q->conn = conn;
        q->method = method;
        q->url = url;
        q->start_us = srv_now_us();
        *con_cls = q;
        /* Refuse an oversized body before reading it. */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->cfg.max_body) {
            srv_error(&r, 413, "the request body is larger than %zu bytes", s->cfg.max_body);
            return respond(q, &r);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (q->body_too_large || q->body_busy || q->body_len + n > s->cfg.max_body) {
            q->body_too_large = 1;
            return MHD_YES;
        }
        if (q->body_len + n > q->body_cap) {
            size_t cap = q->body_cap ? q->body_cap : 65536;
            while (cap < q->body_len + n)
                cap *= 2;
            if (cap > s->cfg.max_body)
                cap = s->cfg.max_body;
            /* All bodies held at once stay within a budget: many large
             * uploads in parallel must not exhaust memory. */
            pthread_mutex_lock(&s->rate_lock);
            int over = s->body_bytes + (cap - q->body_cap) > s->body_budget;
            if (!over)
                s->body_bytes += cap - q->body_cap;
            pthread_mutex_unlock(&s->rate_lock);
            if (over) {
                q->body_busy = 1;
                return MHD_YES;
            }
            uint8_t *p = realloc(q->body, cap);
            if (!p) {
                pthread_mutex_lock(&s->rate_lock);
                s->body_bytes -= cap - q->body_cap;
                pthread_mutex_unlock(&s->rate_lock);
                return MHD_NO;
            }
            q->body = p;
            q->body_cap = cap;
        }
        memcpy(q->body + q->body_len, upload_data, n);
        q->body_len += n;
        return MHD_YES;
    }
    if (q->body_too_large)
        srv_error(&r, 413, "the request body is larger than %zu bytes", s->cfg.max_body);
    else if (q->body_busy)
        srv_error(&r, 503, "the server holds too many uploads at once; retry shortly");
    else
        dispatch(s, q, &r);
    return respond(q, &r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    cmr_server *s = cls;
    srv_request *q = *con_cls;
    if (!q)
        return;
    int64_t us = srv_now_us() - q->start_us;
    if (q->logged) {
        q->entry.latency_us = (uint32_t)(us > UINT32_MAX ? UINT32_MAX : us);
        snprintf(q->entry.who, sizeof q->entry.who, "%s", q->who);
        log_push(s, &q->entry);
    }
    if (s->cfg.access_log) {
        /* The path only (query strings may hold a phrase), printable
         * characters only (no forged log lines). */
        char path[201];
        size_t n = 0;
        for (const char *p = q->url; *p && n < sizeof path - 1; p++)
            path[n++] = *p > 0x20 && *p < 0x7f ? *p : '?';
        path[n] = '\0';
        flockfile(s->cfg.access_log);
        fprintf(s->cfg.access_log, "%s %s %u %lld us %s\n", q->method, path, q->entry.status, (long long)us,
                q->who[0] ? q->who : "-");
        fflush(s->cfg.access_log);
        funlockfile(s->cfg.access_log);
    }
    if (q->body_cap) {
        pthread_mutex_lock(&s->rate_lock);
        s->body_bytes -= q->body_cap;
        pthread_mutex_unlock(&s->rate_lock);
    }
    free(q->body);
    free(q);
    *con_cls = NULL;
}

/* ---- start and stop ------------------------------------------------------------------ */

static int open_workers(cmr_server *s)
{
    const char *name, *hash;
    unsigned dim;
    cmr_store_model(s->store, &name, &hash, &dim);
    snprintf(s->model_name, sizeof s->model_name, "%s", name ? name : "");
    snprintf(s->model_hash, sizeof s->model_hash, "%s", hash ? hash : "");
    s->dim = dim;
    unsigned n = !s->model_dir ? 1 : s->cfg.encoders ? s->cfg.encoders : 2;
    if (!(s->workers = calloc(n, sizeof *s->workers)) || !(s->worker_busy = calloc(n, sizeof *s->worker_busy)))
        return cmr_fail(CMR_ENOMEM, "out of memory");
    if (s->model_dir && !dim)
        return cmr_fail(CMR_ENOTFOUND, "the store has no vectors yet: index it with a model before serving");
    for (unsigned i = 0; i < n; i++) {
        srv_worker *w = &s->workers[i];
        int rc;
        if (s->model_dir) {
            if ((rc = cmr_model_open(s->model_dir, &w->model)))
                return rc;
            s->n_models = i + 1;
            if (strcmp(cmr_model_name(w->model), s->model_name) || strcmp(cmr_model_hash(w->model), s->model_hash) ||
                cmr_model_dim(w->model) != dim)
                return cmr_fail(CMR_EMODEL, "%s: model %s (%.16s, dim %u) is not the store's model %s (%.16s, "
                                            "dim %u)", s->model_dir, cmr_model_name(w->model),
                                cmr_model_hash(w->model), cmr_model_dim(w->model), s->model_name, s->model_hash,
                                dim);
        }
        if ((rc = cmr_searcher_open(s->store, w->model, &w->searcher)))
            return rc;
        s->n_workers = i + 1;
    }
    return 0;
}

int cmr_server_start(cmr_store *store, const cmr_server_config *config, cmr_server **out)
{
    *out = NULL;
    if (!store)
        return cmr_fail(CMR_EINVAL, "serve: no store");
    cmr_server *s = calloc(1, sizeof *s);
    if (!s)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    pthread_mutex_init(&s->rate_lock, NULL);
    pthread_mutex_init(&s->model_lock, NULL);
    pthread_cond_init(&s->model_cond, NULL);
    pthread_mutex_init(&s->image_lock, NULL);
    pthread_mutex_init(&s->audit_lock, NULL);
    pthread_mutex_init(&s->stats_lock, NULL);
    pthread_mutex_init(&s->log_lock, NULL);
    pthread_cond_init(&s->log_cond, NULL);
    s->store = store;
    if (config)
        s->cfg = *config;
    const char *listen = s->cfg.listen ? s->cfg.listen : DEFAULT_LISTEN;
    s->cfg.listen = NULL;
    s->cfg.token_file = NULL;
    s->cfg.model_dir = NULL;
    if (!s->cfg.max_body)
        s->cfg.max_body = DEFAULT_MAX_BODY;
    if (!s->cfg.max_upload_files)
        s->cfg.max_upload_files = 4096;
    if (!s->cfg.max_upload_bytes)
        s->cfg.max_upload_bytes = (uint64_t)1 << 30;
    /* Four largest bodies at once, at least 1 GiB. */
    s->body_budget = s->cfg.max_body * 4 > ((size_t)1 << 30) ? s->cfg.max_body * 4 : (size_t)1 << 30;
    if (!s->cfg.max_connections)
        s->cfg.max_connections = 256;
    if (s->cfg.rate == 0)
        s->cfg.rate = 50;
    if (s->cfg.burst <= 0)
        s->cfg.burst = fmax(2 * s->cfg.rate, 100);
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    int rc;
    uint64_t probe;
    if ((rc = srv_parse_listen(listen, &ss, &sslen, &s->listen_host, &s->loopback)))
        goto fail;
    if (config && config->token_file && (rc = srv_tokens_load(s, config->token_file)))
        goto fail;
    if (!s->loopback && !s->n_tokens) {
        rc = cmr_fail(CMR_EINVAL, "--listen %s is not a loopback address: give --token-file so that every "
                                  "request must carry an access token", listen);
        goto fail;
    }
    if (config && config->model_dir && !(s->model_dir = strdup(config->model_dir))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = open_workers(s)))
        goto fail;
    /* The query log must be writable before the first query is answered. */
    if ((rc = cmr_querylog_count(store, &probe)))
        goto fail;
    {
        cmr_txn *t = NULL;
        if ((rc = cmr_txn_begin(store, &t))) {
            rc = cmr_fail_context(rc, "serve needs the store open for writing (the query log): ");
            goto fail;
        }
        cmr_txn_abort(t);
    }
    if (!(s->buckets = calloc(SRV_RATE_SLOTS, sizeof *s->buckets))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto fail;
    }
    if (pthread_create(&s->log_thread, NULL, log_main, s)) {
        rc = cmr_fail(CMR_ENOMEM, "cannot start the query log thread");
        goto fail;
    }
    s->log_started = 1;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                                 MHD_OPTION_CONNECTION_LIMIT, s->cfg.max_connections,
                                 MHD_OPTION_CONNECTION_TIMEOUT, 60u,
                                 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)256 * 1024,
                                 MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
                                 MHD_OPTION_END);
    if (!s->daemon) {
        rc = cmr_fail(CMR_EIO, "cannot listen on %s (in use, or not an address of this machine)", listen);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : 0;
    *out = s;
    return 0;
fail:
    cmr_server_stop(s);
    return rc;
}

unsigned cmr_server_port(const cmr_server *s) { return s ? s->port : 0; }

int cmr_server_stop(cmr_server *s)
{
    if (!s)
        return 0;
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    int rc = 0;
    if (s->log_started) {
        pthread_mutex_lock(&s->log_lock);
        s->log_stop = 1;
        pthread_cond_broadcast(&s->log_cond);
        pthread_mutex_unlock(&s->log_lock);
        pthread_join(s->log_thread, NULL);
        if (s->log_failed || s->log_dropped)
            rc = cmr_fail(CMR_EIO, "the query log lost %llu entries",
                          (unsigned long long)(s->log_failed + s->log_dropped));
    }
    free(s->log_queue);
    for (unsigned i = 0; s->workers && i < (s->n_models > s->n_workers ? s->n_models : s->n_workers); i++) {
        cmr_searcher_close(s->workers[i].searcher);
        cmr_model_close(s->workers[i].model);
    }
    free(s->workers);
    free(s->worker_busy);
    for (unsigned i = 0; i < SRV_IMAGE_SLOTS; i++)
        free(s->images[i].png);
    if (s->tokens)
        memset(s->tokens, 0, SRV_MAX_TOKENS * sizeof *s->tokens);
    free(s->tokens);
    free(s->buckets);
    free(s->listen_host);
    free(s->model_dir);
    pthread_mutex_destroy(&s->rate_lock);
    pthread_mutex_destroy(&s->model_lock);
    pthread_cond_destroy(&s->model_cond);
    pthread_mutex_destroy(&s->image_lock);
    pthread_mutex_destroy(&s->audit_lock);
    pthread_mutex_destroy(&s->stats_lock);
    free(s->audit_json);
    cmr_model_close(s->audit_model);
    json_decref(s->stats_doc);
    pthread_mutex_destroy(&s->log_lock);
    pthread_cond_destroy(&s->log_cond);
    free(s);
    return rc;
}
