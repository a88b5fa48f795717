/* cmrsearch serve: the HTTP API and web page over a store (searcher/server*.c,
 * docs/server.md). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmr_cli.h"
#include "cmr_model.h"
#include "cmr_searcher.h"

static const char usage[] =
    "usage: cmrsearch serve --db DIR [--listen HOST:PORT] [--token-file FILE] [--model DIR]\n"
    "                       [--encoders N] [--max-body BYTES] [--rate R] [--burst B] [--access-log]\n"
    "\n"
    "Answers the HTTP API of schema/openapi.json and serves the web page at /\n"
    "until interrupted (SIGINT or SIGTERM).  Every query is written to the\n"
    "store's query log ('cmrsearch querylog').\n"
    "\n"
    "  --listen HOST:PORT   address to bind (default 127.0.0.1:8080; port 0: any\n"
    "                       free port, printed on start)\n"
    "  --token-file FILE    access tokens, one 'id:secret' per line (secrets of 16\n"
    "                       or more characters); required for any address but\n"
    "                       loopback; with it, every API request needs\n"
    "                       'Authorization: Bearer SECRET'\n"
    "  --model DIR          the store's model (default: $CMRSEARCH_MODEL, else the\n"
    "                       default model); without one only case queries work\n"
    "  --encoders N         queries encoded at once, one model handle each (default 2)\n"
    "  --max-body BYTES     largest request body, e.g. an uploaded study (default 256 MiB)\n"
    "  --rate R             requests per second per client (token, else address;\n"
    "                       default 50; 0: unlimited)\n"
    "  --burst B            requests a client may make at once (default max(2R, 100))\n"
    "  --access-log         one line per request on stderr (method, path, status,\n"
    "                       time, token id; never query strings)\n";

/* --model, else $CMRSEARCH_MODEL, else the default model; checked against
 * the store.  NULL (no model) only when none was asked for or installed. */
static int choose_model(cmr_cli *cli, const char *explicit_dir, cmr_store *store, const char **dir)
{
    const char *env = getenv("CMRSEARCH_MODEL");
    *dir = explicit_dir ? explicit_dir : env && *env ? env : cmr_cli_default_model();
    cmr_model *m = NULL;
    int rc = cmr_cli_open_model(*dir, store, 0, &m);
    cmr_model_close(m);
    if (rc)
        return rc;
    if (!*dir)
        fprintf(cli->err, "cmrsearch: serve: no model found: text and study queries will answer 503\n");
    return 0;
}

int cmr_cmd_serve(cmr_cli *cli, int argc, char **argv)
{
    const char *db = NULL, *listen = NULL, *token_file = NULL, *model_dir = NULL, *encoders = NULL,
               *max_body = NULL, *rate = NULL, *burst = NULL;
    int access_log = 0;
    const cmr_cli_option options[] = {
        {"db", 0, &db, NULL},
        {"listen", 0, &listen, NULL},
        {"token-file", 0, &token_file, NULL},
        {"model", 0, &model_dir, NULL},
        {"encoders", 0, &encoders, NULL},
        {"max-body", 0, &max_body, NULL},
        {"rate", 0, &rate, NULL},
        {"burst", 0, &burst, NULL},
        {"access-log", 0, NULL, &access_log},
    };
    size_t n_pos;
    const char *pos[1];
    int rc = cmr_cli_parse_command(cli, argc, argv, options, sizeof options / sizeof options[0], usage, pos, 0,
                                   &n_pos);
    if (rc)
        return rc < 0 ? rc : 0;
    cmr_server_config cfg = {.listen = listen, .token_file = token_file, .where_parse = cmr_where_parse_owned,
                             .where_free = cmr_where_owner_free, .access_log = access_log ? cli->err : NULL};
    uint64_t x;
    if (encoders) {
        if ((rc = cmr_cli_parse_u64("--encoders", encoders, 1, 64, &x)))
            return rc;
        cfg.encoders = (unsigned)x;
    }
    if (max_body) {
        if ((rc = cmr_cli_parse_u64("--max-body", max_body, 1024, (uint64_t)1 << 34, &x)))
            return rc;
        cfg.max_body = (size_t)x;
    }
    if (rate) {
        if ((rc = cmr_cli_parse_u64("--rate", rate, 0, 1000000, &x)))
            return rc;
        cfg.rate = x ? (double)x : -1;
    }
    if (burst) {
        if ((rc = cmr_cli_parse_u64("--burst", burst, 1, 1000000, &x)))
            return rc;
        cfg.burst = (double)x;
    }
    /* The signals are waited for, not handled: block them before any thread starts. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* A client closing its connection early must not kill the server. */
    signal(SIGPIPE, SIG_IGN);

    cmr_store *store = NULL;
    cmr_server *server = NULL;
    /* Writable: the query log is written into the store. */
    if ((rc = cmr_cli_open_store(cli, db, 0, &store)) || (rc = choose_model(cli, model_dir, store, &cfg.model_dir)) ||
        (rc = cmr_server_start(store, &cfg, &server)))
        goto done;
    const char *addr = listen ? listen : "127.0.0.1:8080";
    fprintf(cli->err, "cmrsearch: serving %s on http://%.*s:%u/ (%s)\n", db, (int)(strrchr(addr, ':') - addr), addr,
            cmr_server_port(server), token_file ? "access tokens required" : "loopback, no access token");
    fflush(cli->err);
    int sig = 0;
    sigwait(&set, &sig);
    fprintf(cli->err, "cmrsearch: serve: stopping (signal %d)\n", sig);
    rc = cmr_server_stop(server);
    fprintf(cli->err, "cmrsearch: serve: stopped\n");
    server = NULL;
done:
    if (server)
        cmr_server_stop(server);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    return cmr_cli_close_store(store, rc);
}

/* ---- cmrsearch querylog ------------------------------------------------------------- */

static const char querylog_usage[] =
    "usage: cmrsearch querylog --db DIR [--after SEQ] [--limit N] [--json]\n"
    "\n"
    "Prints the store's query log: one line per query a server answered (time,\n"
    "token id, kind, k, offset, filter fields, results, latency, status).  Phrases\n"
    "are never stored: a text query shows its length and a keyed hash.\n"
    "\n"
    "  --after SEQ   entries after sequence number SEQ (default: from the start)\n"
    "  --limit N     at most N entries (default: all)\n";

static void format_us(int64_t us, char out[40])
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm))
        snprintf(out, 40, "?");
    else
        snprintf(out + strlen(out), 40 - strlen(out), ".%03dZ", (int)(us / 1000 % 1000));
}

int cmr_cmd_querylog(cmr_cli *cli, int argc, char **argv)
{
    const char *db = NULL, *after_text = NULL, *limit_text = NULL;
    const cmr_cli_option options[] = {
        {"db", 0, &db, NULL},
        {"after", 0, &after_text, NULL},
        {"limit", 0, &limit_text, NULL},
        {"json", 0, NULL, &cli->json},
    };
    size_t n_pos;
    const char *pos[1];
    int rc = cmr_cli_parse_command(cli, argc, argv, options, sizeof options / sizeof options[0], querylog_usage, pos,
                                   0, &n_pos);
    if (rc)
        return rc < 0 ? rc : 0;
    uint64_t after = 0, limit = 0;
    if ((after_text && (rc = cmr_cli_parse_u64("--after", after_text, 0, UINT64_MAX, &after))) ||
        (limit_text && (rc = cmr_cli_parse_u64("--limit", limit_text, 1, UINT64_MAX, &limit))))
        return rc;
    cmr_store *store = NULL;
    cmr_querylog_entry *e = NULL;
    size_t n = 0;
    if ((rc = cmr_cli_open_store(cli, db, CMR_STORE_RDONLY, &store)) ||
        (rc = cmr_querylog_read(store, after, (size_t)limit, &e, &n)))
        goto done;
    if (cli->json) {
        json_t *list = json_array();
        for (size_t i = 0; list && i < n; i++) {
            char when[40], hash[17] = "";
            format_us(e[i].time_us, when);
            if (e[i].text_len)
                cmr_hex(e[i].text_hash, sizeof e[i].text_hash, hash);
            json_array_append_new(
                list, json_pack("{s:I, s:s, s:s, s:s, s:I, s:I, s:s, s:I, s:I, s:i, s:o, s:o, s:o, s:o}", "seq",
                                (json_int_t)e[i].seq, "time", when, "who", e[i].who, "kind", e[i].kind, "k",
                                (json_int_t)e[i].k, "offset", (json_int_t)e[i].offset, "filters", e[i].filters,
                                "results", (json_int_t)e[i].n_results, "latency_us", (json_int_t)e[i].latency_us,
                                "status", (int)e[i].status, "text_len",
                                e[i].text_len ? json_integer(e[i].text_len) : json_null(), "text_hash",
                                e[i].text_len ? json_string(hash) : json_null(), "case",
                                e[i].case_id ? json_integer((json_int_t)e[i].case_id) : json_null(), "files",
                                e[i].n_files ? json_integer(e[i].n_files) : json_null()));
        }
        rc = cmr_cli_print_json(cli, json_pack("{s:I, s:o}", "n", (json_int_t)n, "entries", list));
    } else {
        fprintf(cli->out, "%6s  %-24s  %-12s  %-9s  %4s  %6s  %7s  %10s  %3s  %s\n", "seq", "time (UTC)", "who",
                "kind", "k", "offset", "results", "latency", "st", "filters / query");
        for (size_t i = 0; i < n; i++) {
            char when[40], what[64] = "", hash[17];
            format_us(e[i].time_us, when);
            if (e[i].text_len) {
                cmr_hex(e[i].text_hash, sizeof e[i].text_hash, hash);
                snprintf(what, sizeof what, "text of %u bytes, hash %s", e[i].text_len, hash);
            } else if (e[i].case_id) {
                snprintf(what, sizeof what, "case %llu", (unsigned long long)e[i].case_id);
            } else if (e[i].n_files) {
                snprintf(what, sizeof what, "%u files uploaded", e[i].n_files);
            }
            fprintf(cli->out, "%6llu  %-24s  %-12s  %-9s  %4u  %6u  %7u  %7.2f ms  %3u  %s%s%s\n",
                    (unsigned long long)e[i].seq, when, e[i].who, e[i].kind, e[i].k, e[i].offset, e[i].n_results,
                    e[i].latency_us / 1000.0, e[i].status, e[i].filters[0] ? e[i].filters : "-", what[0] ? "; " : "",
                    what);
        }
        fprintf(cli->out, "%zu entr%s\n", n, n == 1 ? "y" : "ies");
    }
done:
    free(e);
    return cmr_cli_close_store(store, rc);
}
