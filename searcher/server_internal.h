/* Private to the HTTP server (server*.c, png.c, the generated web_assets.c). */
#ifndef CMR_SERVER_INTERNAL_H
#define CMR_SERVER_INTERNAL_H

#include <pthread.h>
#include <sys/socket.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>

#include "cmr_searcher.h"

/* ---- the embedded page (web_assets.c, generated from searcher/web/) ------ */

typedef struct cmr_web_asset {
    const char *url, *type;
    const unsigned char *data;
    size_t len;
} cmr_web_asset;
extern const cmr_web_asset cmr_web_assets[]; /* ends with a NULL url */

/* ---- png.c ---------------------------------------------------------------- */

/* n_frames grey w x h images (frame after frame) as a PNG, or with n_frames
 * > 1 an APNG looping forever with delay_ms per frame.  *out is malloc'ed. */
int cmr_png_grey(const uint8_t *pix, unsigned w, unsigned h, unsigned n_frames, unsigned delay_ms,
                 uint8_t **out, size_t *out_len);

/* ---- server state ------------------------------------------------------------ */

#define SRV_MAX_TOKENS 256
#define SRV_RATE_SLOTS 4096

typedef struct srv_token {
    char id[CMR_QUERYLOG_WHO];
    char secret[128];
    size_t secret_len;
} srv_token;

typedef struct srv_worker {
    cmr_model *model;          /* NULL when serving without a model */
    cmr_searcher *searcher;
} srv_worker;

typedef struct srv_bucket {
    char key[64];     /* token id or client address; "" free */
    double tokens;
    double last;      /* monotonic seconds of the last refill */
} srv_bucket;

typedef struct srv_cached_image {
    uint64_t id, generation;
    uint32_t view;
    int cine;
    uint8_t *png;
    size_t len;
    uint64_t used;    /* LRU clock */
} srv_cached_image;

#define SRV_IMAGE_SLOTS 256

struct cmr_server {
    cmr_store *store;          /* borrowed */
    cmr_server_config cfg;     /* strings below are copies */
    char *listen_host, *model_dir;
    unsigned port;
    int loopback;
    struct MHD_Daemon *daemon;

    srv_token *tokens;
    size_t n_tokens;

    pthread_mutex_t rate_lock;  /* also guards body_bytes */
    srv_bucket *buckets;
    size_t body_bytes, body_budget; /* request bodies held in memory, and their limit */

    /* Workers: a model handle (single-threaded) and a searcher on it each;
     * a request borrows one for a query.  Without a model: one searcher,
     * shared (case queries only). */
    pthread_mutex_t model_lock;
    pthread_cond_t model_cond;
    srv_worker *workers;
    int *worker_busy;
    unsigned n_workers, n_models;
    uint64_t worker_next_ticket, worker_serving; /* FIFO order of waiting requests */
    char model_name[64], model_hash[96];
    unsigned dim;

    pthread_mutex_t image_lock;
    srv_cached_image images[SRV_IMAGE_SLOTS];
    uint64_t image_clock;
    unsigned uploads_running;  /* guarded by image_lock */

    /* The audit reads the whole store: one runs at a time, and its answer is
     * kept for the store generation and options it was computed for. */
    pthread_mutex_t audit_lock;
    cmr_model *audit_model;    /* its own handle: an audit takes minutes on a large store */
    char *audit_json;
    uint64_t audit_generation;
    unsigned audit_kinds;
    float audit_min_confidence;

    /* Store statistics read every record: kept per generation. */
    pthread_mutex_t stats_lock;
    json_t *stats_doc;
    uint64_t stats_generation;

    /* The query log is written by its own thread, a batch per transaction,
     * so that no request waits for a disk sync. */
    pthread_mutex_t log_lock;
    pthread_cond_t log_cond;
    pthread_t log_thread;
    int log_started, log_stop;
    cmr_querylog_entry *log_queue;
    size_t log_len, log_cap;
    uint64_t log_written, log_dropped, log_failed;
};

/* A request being answered. */
typedef struct srv_request {
    struct MHD_Connection *conn;
    const char *method, *url;
    char who[CMR_QUERYLOG_WHO];  /* token id or "local" */
    uint8_t *body;
    size_t body_len, body_cap;
    int body_too_large;
    int body_busy;               /* refused: the server's body budget is spent */
    int64_t start_us;
    int logged;                  /* a query worth logging: entry below is filled */
    cmr_querylog_entry entry;
} srv_request;

/* A response built by a handler. */
typedef struct srv_response {
    unsigned status;
    const char *type;
    uint8_t *body;               /* malloc'ed, or static when is_static */
    size_t len;
    int is_static;
    unsigned cache_seconds;      /* 0: no-store */
} srv_response;

/* Set *r to a JSON body (steals doc) / an error {error, detail}. */
void srv_json(srv_response *r, unsigned status, json_t *doc);
void srv_error(srv_response *r, unsigned status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* An error from a CMR_E* code and cmr_errmsg(). */
void srv_fail(srv_response *r, int code, const char *what);
/* Case id from the store into *c (the caller frees it); otherwise the 404 or
 * error answer is written to r and nonzero returned. */
int srv_load_case(cmr_server *s, srv_response *r, uint64_t id, cmr_case **c);

/* Query parameters: only names in `allowed` (NULL-terminated) may appear,
 * each at most once; a failure fills r and returns -1. */
int srv_check_params(srv_request *q, srv_response *r, const char *const *allowed);
const char *srv_param(srv_request *q, const char *name);
int srv_param_uint(srv_request *q, srv_response *r, const char *name, uint64_t min, uint64_t max,
                   uint64_t dflt, uint64_t *out);

/* Borrow a worker for a query (waits for a free one), then give it back. */
srv_worker *srv_worker_take(cmr_server *s);
void srv_worker_give(cmr_server *s, srv_worker *w);

int64_t srv_now_us(void);

/* server_auth.c: tokens, rate limits, the listening address. */
int srv_tokens_load(cmr_server *s, const char *path);
/* 0 and q->who set ("local" without tokens), or -1 with a 401 in r. */
int srv_authorise(cmr_server *s, srv_request *q, srv_response *r);
/* 1 if the client (token id, else address) may make a request now; else 0
 * and *retry seconds until it may. */
int srv_rate_ok(cmr_server *s, srv_request *q, double *retry);
/* Without tokens: the Host header names this machine (see server_auth.c). */
int srv_host_ok(cmr_server *s, srv_request *q);
int srv_parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len, char **host, int *loopback);

/* ---- handlers (server_api.c, server_search.c, server_image.c) ------------------ */

void srv_health(cmr_server *s, srv_request *q, srv_response *r);
void srv_version(cmr_server *s, srv_request *q, srv_response *r);
void srv_case(cmr_server *s, srv_request *q, srv_response *r, uint64_t id);
void srv_prompts(cmr_server *s, srv_request *q, srv_response *r);
void srv_stats(cmr_server *s, srv_request *q, srv_response *r);
void srv_audit(cmr_server *s, srv_request *q, srv_response *r);
void srv_search(cmr_server *s, srv_request *q, srv_response *r);
void srv_search_study(cmr_server *s, srv_request *q, srv_response *r);
void srv_image(cmr_server *s, srv_request *q, srv_response *r, uint64_t id, int cine);

/* A case for the API: the record without source paths and patient key. */
json_t *srv_case_json(const cmr_case *c, int detail);


/* Uploads (server_upload.c): the body's files into a new private directory
 * *dir under generated names (srv_upload_remove deletes them, the directory
 * and frees dir).  A failure sets *status (400, 413, 415, 500) and the
 * message in cmr_errmsg(); *dir is then NULL. */
int srv_upload_extract(cmr_server *s, srv_request *q, char **dir, size_t *n_files, unsigned *status);
void srv_upload_remove(char *dir, size_t n_files);

#endif
