/* cmrsearch serve: who may ask, and how often: the access tokens, the
 * per-client token buckets, and the listening address (loopback or not). */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "server_internal.h"

/* ---- tokens -------------------------------------------------------------------- */

int srv_tokens_load(cmr_server *s, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return cmr_fail(errno == ENOENT ? CMR_ENOTFOUND : CMR_EIO, "--token-file %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
        fprintf(stderr, "cmrsearch: warning: %s is readable by others; run chmod 600\n", path);
    int rc = 0;
    char line[512];
    size_t lineno = 0;
    if (!(s->tokens = calloc(SRV_MAX_TOKENS, sizeof *s->tokens))) {
        fclose(f);
        return cmr_fail(CMR_ENOMEM, "out of memory");
    }
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n') {
            rc = cmr_fail(CMR_EFORMAT, "%s:%zu: line too long", path, lineno);
            break;
        }
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
            line[--n] = '\0';
        if (!n || line[0] == '#')
            continue;
        char *colon = strchr(line, ':');
        size_t id_len = colon ? (size_t)(colon - line) : 0;
        if (!colon || !id_len || id_len >= CMR_QUERYLOG_WHO) {
            rc = cmr_fail(CMR_EFORMAT, "%s:%zu: expected 'id:secret' with an id of 1 to %d characters", path, lineno,
                          CMR_QUERYLOG_WHO - 1);
            break;
        }
        for (size_t i = 0; i < id_len && !rc; i++)
            if (!isalnum((unsigned char)line[i]) && !strchr("-_.", line[i]))
                rc = cmr_fail(CMR_EFORMAT, "%s:%zu: token ids use letters, digits, '-', '_' and '.'", path, lineno);
        const char *secret = colon + 1;
        size_t secret_len = strlen(secret);
        if (!rc && (secret_len < 16 || secret_len >= sizeof s->tokens[0].secret))
            rc = cmr_fail(CMR_EFORMAT, "%s:%zu: a secret has 16 to %zu characters", path, lineno,
                          sizeof s->tokens[0].secret - 1);
        for (size_t i = 0; i < secret_len && !rc; i++)
            if (!isgraph((unsigned char)secret[i]))
                rc = cmr_fail(CMR_EFORMAT, "%s:%zu: a secret is printable ASCII without spaces", path, lineno);
        if (!rc && s->n_tokens == SRV_MAX_TOKENS)
            rc = cmr_fail(CMR_EFORMAT, "%s: more than %d tokens", path, SRV_MAX_TOKENS);
        for (size_t i = 0; i < s->n_tokens && !rc; i++)
            if (strlen(s->tokens[i].id) == id_len && !memcmp(s->tokens[i].id, line, id_len))
                rc = cmr_fail(CMR_EFORMAT, "%s:%zu: token id '%.*s' appears twice", path, lineno, (int)id_len, line);
        if (rc)
            break;
        srv_token *t = &s->tokens[s->n_tokens++];
        memcpy(t->id, line, id_len);
        memcpy(t->secret, secret, secret_len);
        t->secret_len = secret_len;
    }
    fclose(f);
    memset(line, 0, sizeof line);
    if (!rc && !s->n_tokens)
        rc = cmr_fail(CMR_EFORMAT, "%s: no tokens (lines 'id:secret')", path);
    return rc;
}

/* Constant time in the secret's content: every token is compared in full. */
static const srv_token *find_token(const cmr_server *s, const char *given)
{
    size_t glen = strlen(given);
    const srv_token *found = NULL;
    for (size_t i = 0; i < s->n_tokens; i++) {
        const srv_token *t = &s->tokens[i];
        unsigned char diff = (unsigned char)(glen != t->secret_len);
        for (size_t j = 0; j < t->secret_len; j++)
            diff |= (unsigned char)(t->secret[j] ^ (j < glen ? given[j] : 0));
        if (!diff)
            found = t;
    }
    return found;
}

int srv_authorise(cmr_server *s, srv_request *q, srv_response *r)
{
    if (!s->n_tokens) {
        snprintf(q->who, sizeof q->who, "local");
        return 0;
    }
    const char *h = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    const srv_token *t = NULL;
    if (h && !strncasecmp(h, "Bearer ", 7)) {
        const char *v = h + 7;
        while (*v == ' ')
            v++;
        t = find_token(s, v);
    }
    if (!t) {
        srv_error(r, 401, h ? "the access token is not valid" : "an access token is required (Authorization: Bearer TOKEN)");
        return -1;
    }
    snprintf(q->who, sizeof q->who, "%s", t->id);
    return 0;
}

/* ---- rate limit ------------------------------------------------------------------ */

/* Whom a bucket belongs to: the token id once authenticated, else the
 * client's address (also for failed authentications, so that guessing
 * tokens is slowed down like any other traffic). */
static void client_key(srv_request *q, char *key, size_t len)
{
    if (q->who[0] && strcmp(q->who, "local")) {
        snprintf(key, len, "t:%s", q->who);
        return;
    }
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(q->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char addr[INET6_ADDRSTRLEN] = "?";
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, addr, sizeof addr);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, addr, sizeof addr);
    }
    snprintf(key, len, "a:%s", addr);
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

int srv_rate_ok(cmr_server *s, srv_request *q, double *retry)
{
    if (s->cfg.rate < 0)
        return 1;
    char key[64];
    client_key(q, key, sizeof key);
    double now = (double)srv_now_us() / 1e6;
    uint64_t h = hash_str(key);
    pthread_mutex_lock(&s->rate_lock);
    /* Open addressing over a fixed table; when the probe run is full the
     * stalest bucket in it is reused (a full bucket: no penalty for the
     * client whose slot it was). */
    srv_bucket *b = NULL, *oldest = NULL;
    for (unsigned i = 0; i < 16 && !b; i++) {
        srv_bucket *c = &s->buckets[(h + i) % SRV_RATE_SLOTS];
        if (!c->key[0] || !strcmp(c->key, key))
            b = c;
        else if (!oldest || c->last < oldest->last)
            oldest = c;
    }
    if (!b) {
        b = oldest;
        b->key[0] = '\0';
    }
    if (!b->key[0]) {
        snprintf(b->key, sizeof b->key, "%s", key);
        b->tokens = s->cfg.burst;
        b->last = now;
    }
    b->tokens = fmin(s->cfg.burst, b->tokens + (now - b->last) * s->cfg.rate);
    b->last = now;
    int ok = b->tokens >= 1.0;
    if (ok)
        b->tokens -= 1.0;
    else
        *retry = (1.0 - b->tokens) / s->cfg.rate;
    pthread_mutex_unlock(&s->rate_lock);
    return ok;
}

int srv_parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len, char **host, int *loopback)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen)
        return cmr_fail(CMR_EINVAL, "--listen '%s': expected HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)", listen);
    size_t hl = (size_t)(colon - listen);
    const char *h = listen;
    if (h[0] == '[') {
        if (hl < 2 || h[hl - 1] != ']')
            return cmr_fail(CMR_EINVAL, "--listen '%s': an IPv6 address goes in brackets", listen);
        h++;
        hl -= 2;
    }
    char *hs = strndup(h, hl);
    if (!hs)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (!colon[1] || *end || errno || port > 65535) {
        free(hs);
        return cmr_fail(CMR_EINVAL, "--listen '%s': the port is a number from 0 to 65535", listen);
    }
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (!strcmp(hs, "localhost") && inet_pton(AF_INET, "127.0.0.1", &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof *a4;
        *loopback = 1;
    } else if (inet_pton(AF_INET, hs, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof *a4;
        *loopback = (ntohl(a4->sin_addr.s_addr) >> 24) == 127;
    } else if (inet_pton(AF_INET6, hs, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof *a6;
        *loopback = IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr);
    } else {
        int rc = cmr_fail(CMR_EINVAL, "--listen '%s': '%s' is not an IP address (names other than localhost are "
                                      "not resolved)", listen, hs);
        free(hs);
        return rc;
    }
    *host = hs;
    return 0;
}


/* Without tokens the API trusts the machine's own users, so a request must
 * name this machine: a web page elsewhere could otherwise point its own
 * host name at 127.0.0.1 (DNS rebinding) and read the answers. */
int srv_host_ok(cmr_server *s, srv_request *q)
{
    if (s->n_tokens)
        return 1;
    const char *h = MHD_lookup_connection_value(q->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if (!h)
        return 0;
    char host[256];
    size_t n;
    if (h[0] == '[') {
        const char *close = strchr(h, ']');
        n = close ? (size_t)(close - h + 1) : 0;
    } else {
        n = strcspn(h, ":");
    }
    if (!n || n >= sizeof host)
        return 0;
    memcpy(host, h, n);
    host[n] = '\0';
    struct in_addr a4;
    if (!strcasecmp(host, "localhost") || !strcmp(host, "[::1]") ||
        (inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127))
        return 1;
    /* The address it was told to listen on, as written. */
    if (s->listen_host && (!strcasecmp(host, s->listen_host) ||
                           (host[0] == '[' && n - 2 == strlen(s->listen_host) &&
                            !strncasecmp(host + 1, s->listen_host, n - 2))))
        return 1;
    return 0;
}
