/* cmrsearch: command dispatch and the helpers every command shares
 * (options, numbers, dates, opening the store, progress, JSON output). */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmr_cli.h"
#include "cmr_model.h"

#define MAX_OPTIONS 32

typedef struct command {
    const char *name;
    int (*run)(cmr_cli *cli, int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"init", cmr_cmd_init, "create a store"},
    {"index", cmr_cmd_index, "ingest archive folders of DICOM studies and reports"},
    {"import", cmr_cmd_import, "bring vectors computed elsewhere into a store"},
    {"search", cmr_cmd_search, "find the cases most similar to a case or a vector"},
    {"show", cmr_cmd_show, "print one case"},
    {"verify", cmr_cmd_verify, "check a store; exit 0 only if sound"},
    {"reindex", cmr_cmd_reindex, "rebuild the derived indexes from LMDB"},
    {"eval", cmr_cmd_eval, "the CMR-CLIP evaluation protocol on a labelled store"},
    {"stats", cmr_cmd_stats, "counts, model and index state of a store"},
    {"train", cmr_cmd_train, "train the compact model on the store's (study, impression) pairs"},
    {"audit", cmr_cmd_audit, "what a curator should check: label errors, duplicates, gaps"},
    {"info", cmr_cmd_stats, "the same as stats"},
    {"serve", cmr_cmd_serve, "the HTTP API and web page"},
    {"querylog", cmr_cmd_querylog, "print the store's query log"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void print_usage(FILE *to)
{
    fprintf(to, "usage: " CMR_CLI_PROGRAM " COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(to, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(to, "\n'" CMR_CLI_PROGRAM " COMMAND --help' describes a command; "
                "'man cmrsearch' describes them all.\n"
                "Exit status: 0 ok, 1 bad usage or input, 2 data or I/O error.\n");
}

int cmr_cli_exit_status(int code)
{
    switch (code) {
    case CMR_OK:
        return CMR_EXIT_OK;
    /* The request, or a file the user handed in, is wrong: fixing the
     * command line or the input is what helps. */
    case CMR_EINVAL:
    case CMR_EFORMAT:
    case CMR_EMODEL:
    case CMR_EEXIST:
        return CMR_EXIT_USAGE;
    default:
        return CMR_EXIT_DATA;
    }
}

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

int cmr_cli_run(int argc, char **argv, FILE *out, FILE *err)
{
    cmr_cli cli = {.out = out, .err = err, .command = CMR_CLI_PROGRAM};
    cli.show_progress = isatty(fileno(err));
    cmr_clear_error();
    if (argc < 2) {
        print_usage(err);
        return CMR_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h")) {
        print_usage(out);
        return CMR_EXIT_OK;
    }
    if (!strcmp(name, "--version")) {
        fprintf(out, CMR_CLI_PROGRAM " %s\n", CMR_VERSION);
        return CMR_EXIT_OK;
    }
    /* "help CMD" runs "CMD --help". */
    char *help_argv[] = {NULL, "--help", NULL};
    int cmd_argc = argc - 1;
    char **cmd_argv = argv + 1;
    if (!strcmp(name, "help")) {
        if (argc < 3) {
            print_usage(out);
            return CMR_EXIT_OK;
        }
        name = help_argv[0] = argv[2];
        cmd_argc = 2;
        cmd_argv = help_argv;
    }
    const command *cmd = find_command(name);
    if (!cmd) {
        fprintf(err, CMR_CLI_PROGRAM ": '%s' is not a command (see '" CMR_CLI_PROGRAM " --help')\n",
                name);
        return CMR_EXIT_USAGE;
    }
    cli.command = cmd->name;
    int rc = cmd->run(&cli, cmd_argc, cmd_argv);
    fflush(out);
    if (rc) {
        const char *msg = cmr_errmsg();
        fprintf(err, CMR_CLI_PROGRAM ": %s: %s\n", cli.command, *msg ? msg : cmr_strerror(rc));
    }
    return cmr_cli_exit_status(rc);
}

int cmr_cli_main(int argc, char **argv)
{
    cmr_blas_init(); /* single-threaded here, before FAISS or a model runs */
    return cmr_cli_run(argc, argv, stdout, stderr);
}

/* ---- options ------------------------------------------------------------------- */

static const cmr_cli_option *find_long(const cmr_cli_option *options, size_t n, const char *name,
                                       size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0)
            return &options[i];
    return NULL;
}

static const cmr_cli_option *find_short(const cmr_cli_option *options, size_t n, char c)
{
    for (size_t i = 0; i < n; i++)
        if (options[i].short_name && options[i].short_name == c)
            return &options[i];
    return NULL;
}

int cmr_cli_parse_options(int argc, char **argv, const cmr_cli_option *options, size_t n_options,
                          const char **positional, size_t max_positional, size_t *n_positional,
                          int *help)
{
    const char *cmd = argc > 0 ? argv[0] : CMR_CLI_PROGRAM;
    int seen[MAX_OPTIONS] = {0};
    size_t n_pos = 0;
    int only_positional = 0;
    *help = 0;
    if (n_options > MAX_OPTIONS)
        return cmr_fail(CMR_EINVAL, "internal: too many options for %s", cmd);
    for (int i = 1; i < argc; i++) {
        const char *word = argv[i];
        if (!only_positional && !strcmp(word, "--")) {
            only_positional = 1;
            continue;
        }
        if (only_positional || word[0] != '-' || word[1] == '\0') {
            if (n_pos == max_positional)
                return cmr_fail(CMR_EINVAL, "unexpected argument '%s' (see '" CMR_CLI_PROGRAM
                                            " %s --help')", word, cmd);
            positional[n_pos++] = word;
            continue;
        }
        if (!strcmp(word, "--help") || !strcmp(word, "-h")) {
            *help = 1;
            return 0;
        }
        const cmr_cli_option *opt;
        const char *inline_value = NULL;
        if (word[1] == '-') {
            const char *name = word + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            opt = find_long(options, n_options, name, len);
            if (eq)
                inline_value = eq + 1;
        } else {
            /* "-k5" is "-k 5"; bundled flags are not needed by any command. */
            opt = find_short(options, n_options, word[1]);
            if (opt && word[2]) {
                if (opt->value)
                    inline_value = word + 2;
                else
                    opt = NULL;
            }
        }
        if (!opt)
            return cmr_fail(CMR_EINVAL, "unknown option '%s' (see '" CMR_CLI_PROGRAM " %s --help')",
                            word, cmd);
        size_t k = (size_t)(opt - options);
        if (seen[k]++)
            return cmr_fail(CMR_EINVAL, "option --%s is given more than once", opt->name);
        if (!opt->value) {
            if (inline_value)
                return cmr_fail(CMR_EINVAL, "option --%s takes no value", opt->name);
            *opt->flag = 1;
            continue;
        }
        if (!inline_value) {
            if (i + 1 >= argc)
                return cmr_fail(CMR_EINVAL, "option --%s needs a value", opt->name);
            inline_value = argv[++i];
        }
        *opt->value = inline_value;
    }
    *n_positional = n_pos;
    return 0;
}

int cmr_cli_parse_u64(const char *option, const char *text, uint64_t min, uint64_t max,
                      uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || !(text[0] >= '0' && text[0] <= '9') || v < min || v > max)
        return cmr_fail(CMR_EINVAL, "%s: '%s' is not a whole number from %llu to %llu", option,
                        text, (unsigned long long)min, (unsigned long long)max);
    *out = v;
    return 0;
}

static int digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

int cmr_cli_parse_date(const char *text, int32_t *yyyymmdd)
{
    static const int month_days[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    size_t n = strlen(text);
    int y, m, d;
    if (n == 10 && text[4] == '-' && text[7] == '-' && digits(text, 4) && digits(text + 5, 2) &&
        digits(text + 8, 2)) {
        y = atoi(text);
        m = atoi(text + 5);
        d = atoi(text + 8);
    } else if (n == 8 && digits(text, 8)) {
        long v = strtol(text, NULL, 10);
        y = (int)(v / 10000);
        m = (int)(v / 100 % 100);
        d = (int)(v % 100);
    } else {
        return cmr_fail(CMR_EINVAL, "'%s' is not a date (YYYY-MM-DD or YYYYMMDD)", text);
    }
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1800 || y > 9999 || m < 1 || m > 12 || d < 1 || d > month_days[m - 1] ||
        (m == 2 && d == 29 && !leap))
        return cmr_fail(CMR_EINVAL, "'%s' is not a calendar date from 1800 on", text);
    *yyyymmdd = y * 10000 + m * 100 + d;
    return 0;
}

void cmr_cli_format_date(int32_t v, char out[11])
{
    if (v <= 0 || v > 99991231) {
        out[0] = '\0';
        return;
    }
    snprintf(out, 11, "%04d-%02d-%02d", (int)(v / 10000), (int)(v / 100 % 100), (int)(v % 100));
}

/* ---- store, progress, output ------------------------------------------------------ */

int cmr_cli_open_store(cmr_cli *cli, const char *db, unsigned flags, cmr_store **out)
{
    *out = NULL;
    if (!db || !*db)
        return cmr_fail(CMR_EINVAL, "--db DIR is required (see '" CMR_CLI_PROGRAM " %s --help')",
                        cli->command);
    int rc = cmr_store_open(db, flags, NULL, out);
    if (rc)
        return rc;
    if (cli->show_progress)
        cmr_store_set_progress(*out, cmr_cli_progress, cli);
    return 0;
}

int cmr_cli_parse_command(cmr_cli *cli, int argc, char **argv, const cmr_cli_option *options, size_t n_options,
                          const char *usage, const char **positional, size_t max_positional, size_t *n_positional)
{
    int help = 0;
    int rc = cmr_cli_parse_options(argc, argv, options, n_options, positional, max_positional, n_positional, &help);
    if (rc)
        return rc;
    if (help) {
        fputs(usage, cli->out);
        return 1;
    }
    return 0;
}

void cmr_cli_progress(void *user, const char *phase, uint64_t done, uint64_t total)
{
    cmr_cli *cli = user;
    if (!cli->show_progress || !phase)
        return;
    int percent = total ? (int)(done * 100 / total) : 100;
    int new_phase = !cli->progress_phase || strcmp(cli->progress_phase, phase) != 0;
    if (!new_phase && percent == cli->progress_percent && done != total)
        return;
    cli->progress_phase = phase;
    cli->progress_percent = percent;
    fprintf(cli->err, "\r%s: %llu/%llu (%d%%)", phase, (unsigned long long)done,
            (unsigned long long)total, percent);
    if (done >= total) {
        fputc('\n', cli->err);
        cli->progress_phase = NULL;
    }
    fflush(cli->err);
}

int cmr_cli_print_json(cmr_cli *cli, json_t *doc)
{
    if (!doc)
        return cmr_fail(CMR_ENOMEM, "out of memory building JSON output");
    /* 7 significant digits: what a float32 holds, without 0.55000001 noise. */
    int rc = json_dumpf(doc, cli->out, JSON_INDENT(2) | JSON_REAL_PRECISION(7));
    json_decref(doc);
    if (rc != 0 || fputc('\n', cli->out) == EOF)
        return cmr_fail(CMR_EIO, "cannot write output: %s", strerror(errno));
    return 0;
}

int cmr_cli_close_store(cmr_store *store, int rc)
{
    int close_rc = cmr_store_close(store);
    return rc ? rc : close_rc;
}
