/* Shared by tests/test_server.c and tests/test_server_upload.c: the
 * fixtures' globals and a minimal HTTP/1.1 client over plain sockets. */
#ifndef CMR_TEST_SERVER_H
#define CMR_TEST_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cmr_searcher.h"

extern char *g_dir, *g_db, *g_archive, *g_study_dir;
extern cmr_store *g_store;
extern cmr_server *g_srv, *g_strict;
extern uint64_t g_real_case, g_synth_case;

typedef struct reply {
    int status;
    char *headers;
    char *body;
    size_t len;
} reply;

void reply_free(reply *r);
/* One request on a new connection (Connection: close); 0 when an answer came. */
int http(unsigned port, const char *method, const char *path, const char *extra_headers, const void *body,
         size_t body_len, reply *out);
/* GET, check the status and the JSON (an error's {error, detail}); the document. */
json_t *get_json(unsigned port, const char *path, int want_status);
void expect_error(unsigned port, const char *path, int status, const char *detail_part);
void read_file(const char *path, unsigned char **data, size_t *n);

void test_upload(void **state);

#endif
