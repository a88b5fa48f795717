/* cmrsearch command line: internal interfaces shared by the cli/ sources and tests/test_cli.c.
 *
 * Every command runs against a cmr_cli context that names its output streams,
 * so that tests can run whole commands in-process with memory streams and
 * read back exactly what a user would see.  Functions that can fail return 0
 * or a negative CMR_E* code with the detailed message in cmr_errmsg(). */
#ifndef CMR_CLI_H
#define CMR_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "cmr_sha256.h"
#include "cmr_indexer.h"
#include "cmr_store.h"

#define CMR_CLI_PROGRAM "cmrsearch"

/* Exit statuses (DESIGN.md): scripts rely on these. */
enum { CMR_EXIT_OK = 0, CMR_EXIT_USAGE = 1, CMR_EXIT_DATA = 2 };

typedef struct cmr_cli {
    FILE *out;           /* results: human text, or one JSON document */
    FILE *err;           /* errors, and progress when it is a terminal */
    const char *command; /* for "cmrsearch: <command>: ..." */
    int json;
    int show_progress;
    /* progress throttling: the last percentage printed per phase */
    const char *progress_phase;
    int progress_percent;
} cmr_cli;

/* The whole program: parse argv[1] as a command and run it.  Returns the
 * exit status; errors are printed to err. */
int cmr_cli_run(int argc, char **argv, FILE *out, FILE *err);
/* cmr_cli_run on stdout/stderr. */
int cmr_cli_main(int argc, char **argv);

/* Exit status for a CMR_E* code: 1 for a bad request or bad input file,
 * 2 for trouble with the store, a file system or a library. */
int cmr_cli_exit_status(int code);

/* ---- option parsing ---------------------------------------------------- */

typedef struct cmr_cli_option {
    const char *name;   /* long name without the dashes: "db" */
    char short_name;    /* 'k', or 0 */
    const char **value; /* takes a value stored here, or NULL for a flag */
    int *flag;          /* set to 1 when a flag is given */
} cmr_cli_option;

/* Parse argv[1..] (argv[0] is the command name) against options.  Words
 * that are not options go to positional[] (at most max_positional).
 * "--help"/"-h" sets *help and stops.  Errors name the offending word. */
int cmr_cli_parse_options(int argc, char **argv, const cmr_cli_option *options,
                          size_t n_options, const char **positional, size_t max_positional,
                          size_t *n_positional, int *help);
/* cmr_cli_parse_options, then --help: prints usage and returns 1 (the
 * command returns 0).  0: go on; negative: the error. */
int cmr_cli_parse_command(cmr_cli *cli, int argc, char **argv, const cmr_cli_option *options, size_t n_options,
                          const char *usage, const char **positional, size_t max_positional, size_t *n_positional);
int cmr_cli_parse_u64(const char *option, const char *text, uint64_t min, uint64_t max,
                      uint64_t *out);
/* "YYYY-MM-DD" or "YYYYMMDD", a real calendar date, to YYYYMMDD. */
int cmr_cli_parse_date(const char *text, int32_t *yyyymmdd);
/* YYYYMMDD as "YYYY-MM-DD" (out[11]); "" for 0. */
void cmr_cli_format_date(int32_t yyyymmdd, char out[11]);

/* Open the store named by --db, with a helpful message when none was given. */
int cmr_cli_open_store(cmr_cli *cli, const char *db, unsigned flags, cmr_store **out);
/* Close store (NULL harmless) and return rc, or the close's own error when
 * rc is 0: a failing final index flush is not lost. */
int cmr_cli_close_store(cmr_store *store, int rc);

/* Sends store progress to err when err is a terminal. */
void cmr_cli_progress(void *cli, const char *phase, uint64_t done, uint64_t total);
/* Print a JSON document (one line per key, trailing newline) on cli->out; steals doc. */
int cmr_cli_print_json(cmr_cli *cli, json_t *doc);

/* ---- commands (argv[0] is the command name) ------------------------------ */

/* The indexer's input spec for a model's declared input (cmd_index.c). */
struct cmr_model;
/* The default model's directory, NULL when none is installed. */
const char *cmr_cli_default_model(void);
/* Open explicit_dir, else $CMRSEARCH_MODEL, else the default model; with a
 * store, refuse (CMR_EMODEL) a model other than the one its vectors come
 * from.  Not required and nothing found: 0 with *out NULL. */
int cmr_cli_open_model(const char *explicit_dir, cmr_store *store, int required, struct cmr_model **out);
int cmr_cli_input_spec(const struct cmr_model *m, cmr_input_spec *spec);
/* The same from a declared input (model_name only names it in errors). */
struct cmr_model_input;
int cmr_cli_spec_from(const struct cmr_model_input *in, const char *model_name, cmr_input_spec *spec);

/* Move store to model (reembed.c): every case's study read again from its
 * recorded folder and embedded with its impression, then the model and all
 * vectors replaced in one write transaction.  Studies that cannot be read
 * make it fail with nothing changed, unless keep_unreadable (those cases keep
 * their text vector only). */
typedef struct cmr_reembed_summary {
    size_t cases, images, texts, unreadable;
} cmr_reembed_summary;
int cmr_cli_reembed(cmr_cli *cli, cmr_store *store, struct cmr_model *model, unsigned threads, int keep_unreadable,
                    cmr_reembed_summary *summary);

/* The model directory a command uses: explicit_dir, else $CMRSEARCH_MODEL,
 * else the default model; NULL when none is installed. */
const char *cmr_cli_model_dir(const char *explicit_dir);

int cmr_cmd_init(cmr_cli *cli, int argc, char **argv);
int cmr_cmd_index(cmr_cli *cli, int argc, char **argv);
int cmr_cmd_import(cmr_cli *cli, int argc, char **argv);
int cmr_cmd_search(cmr_cli *cli, int argc, char **argv);
int cmr_cmd_show(cmr_cli *cli, int argc, char **argv);
int cmr_cmd_verify(cmr_cli *cli, int argc, char **argv);
int cmr_cmd_reindex(cmr_cli *cli, int argc, char **argv);
int cmr_cmd_stats(cmr_cli *cli, int argc, char **argv);
int cmr_cmd_eval(cmr_cli *cli, int argc, char **argv);
int cmr_cmd_train(cmr_cli *cli, int argc, char **argv);
int cmr_cmd_serve(cmr_cli *cli, int argc, char **argv);    /* cmd_serve.c */
int cmr_cmd_querylog(cmr_cli *cli, int argc, char **argv); /* cmd_serve.c */
int cmr_cmd_audit(cmr_cli *cli, int argc, char **argv);

/* ---- .npy files ------------------------------------------------------------ */

/* A float32 matrix read from a .npy file (rows x cols, C order).  ndim is
 * 1 for a shape (D,) file, which reads as one row. */
typedef struct cmr_npy {
    size_t rows, cols;
    int ndim;
    char descr[32];      /* dtype as written in the file: "<f4", "<f8", "<f2" */
    const float *data;   /* rows * cols values */
    /* ownership: either a mapping of the file or a converted copy */
    void *map;
    size_t map_len;
    float *owned;
} cmr_npy;

/* Read path: NPY format 1.0, 2.0 or 3.0, little-endian float32 (float64 and
 * float16 are converted), C order, 1 or 2 dimensions.  Values are not
 * checked here (see cmr_npy_check_rows). */
int cmr_npy_read(const char *path, cmr_npy *out);
/* The same from bytes in memory (what cmr_npy_read parses after mapping);
 * name is used in messages.  The result copies what it keeps. */
int cmr_npy_parse(const char *name, const void *bytes, size_t len, cmr_npy *out);
void cmr_npy_free(cmr_npy *npy);
/* Every value finite and no row all zero; a failure names row and column
 * and sets *bad_row. */
int cmr_npy_check_rows(const char *name, const cmr_npy *npy, size_t *bad_row);

/* ---- import manifests (schema/import-manifest.md) ------------------------ */

#define CMR_MANIFEST_FORMAT "cmrsearch-import/1"

typedef struct cmr_import_case {
    size_t index;           /* position in "cases" */
    size_t row;             /* row of the vector files */
    cmr_case c;             /* strings point into the manifest's JSON */
    const char *patient_id; /* to be keyed with the store's secret; never stored */
    cmr_diagnosis *diagnoses;
    const char **sources;
} cmr_import_case;

typedef struct cmr_import_manifest {
    char *path;
    char *dir;              /* directory that relative vector paths start from */
    json_t *root;           /* owns every string the cases point to */
    const char *model_name, *model_hash;
    unsigned dim;
    char *vector_path[CMR_NSPACES]; /* resolved; NULL when absent */
    size_t n_cases;
    cmr_import_case *cases;
} cmr_import_manifest;

/* Read and check a manifest: structure, every field of every case, duplicate
 * Study Instance UIDs and rows.  Messages name the file, case and row. */
int cmr_import_manifest_load(const char *path, cmr_import_manifest *out);
/* The same from JSON text; relative vector paths start from dir. */
int cmr_import_manifest_parse(const char *name, const char *dir, const char *json_text,
                       cmr_import_manifest *out);
void cmr_import_manifest_free(cmr_import_manifest *m);

/* ---- --where expressions ----------------------------------------------------- */

typedef struct cmr_where {
    cmr_filter filter;   /* strings point into the allocation */
    char *text;          /* storage for values */
    const char **diagnoses;
    cmr_finding_bound *bounds; /* finding bounds; names are the prompt bank's keys */
} cmr_where;

/* Parse an expression ("diagnosis in (I42.1, E85.4) and age between 40 and
 * 70 ...") into a filter.  Errors name the column and token. */
int cmr_where_parse(const char *expr, cmr_where *out);
void cmr_where_free(cmr_where *w);
/* The same in the shape of cmr_server_config's where_parse/where_free
 * callbacks: *filter points into *owner, an allocated cmr_where released
 * with cmr_where_owner_free (NULL is harmless). */
int cmr_where_parse_owned(const char *expr, const cmr_filter **filter, void **owner);
void cmr_where_owner_free(void *owner);

/* ---- JSON and text rendering ------------------------------------------------- */

/* cmr_json_text (a string or null, bad UTF-8 shown as '?') is the
 * searcher's: searcher/cmr_searcher.h. */
json_t *cmr_json_text(const char *s);
/* A case as JSON: every field, patient key as hex, no patient identity. */
json_t *cmr_case_to_json(const cmr_case *c);
/* The same for people, one field per line. */
void cmr_case_print(FILE *out, const cmr_case *c);
json_t *cmr_filter_to_json(const cmr_filter *f);
json_t *cmr_stats_to_json(const cmr_store_stats *st, const cmr_store *store);

#endif
