/* cmr-synth-vectors: writes a synthetic case collection in the import format
 * (DIR/manifest.json, DIR/image.npy, DIR/text.npy) for demos and benchmarks.
 *
 * Rows are generated and written one at a time, so memory stays a few MB
 * whatever N is; the files appear under their names only once complete. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cmr_error.h"
#include "synth.h"

#define PROGRAM "cmr-synth-vectors"
#define MAX_ROWS 100000000ull
#define IO_BUFFER (1u << 20)

typedef struct out_file {
    char path[4096];
    char tmp[4200];
    FILE *f;
    char *buffer; /* stdio buffer: rows are written 2 KB at a time */
} out_file;

static void usage(FILE *to)
{
    fprintf(to,
            "usage: " PROGRAM " --out DIR [--n N] [--dim D] [--seed S] [--clusters C]\n"
            "\n"
            "Writes N synthetic cardiac MRI cases to DIR: manifest.json (cmrsearch-import/1),\n"
            "image.npy and text.npy (float32, N x D).  The same seed gives the same files.\n"
            "  --n N          cases (default 1000)\n"
            "  --dim D        vector dimension (default %u)\n"
            "  --seed S       random seed (default 1)\n"
            "  --clusters C   phenotype clusters (default %u)\n",
            SYNTH_DEFAULT_DIM, SYNTH_DEFAULT_CLUSTERS);
}

static int out_open(out_file *o, const char *dir, const char *name)
{
    int n = snprintf(o->path, sizeof o->path, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof o->path)
        return cmr_fail(CMR_EINVAL, "%s: path too long", dir);
    snprintf(o->tmp, sizeof o->tmp, "%s.tmp.%ld", o->path, (long)getpid());
    o->f = fopen(o->tmp, "wb");
    if (!o->f)
        return cmr_fail(CMR_EIO, "%s: %s", o->tmp, strerror(errno));
    o->buffer = malloc(IO_BUFFER);
    if (o->buffer)
        setvbuf(o->f, o->buffer, _IOFBF, IO_BUFFER);
    return 0;
}

static int out_close(out_file *o, int keep)
{
    int rc = 0;
    if (o->f && fclose(o->f) != 0 && keep)
        rc = cmr_fail(CMR_EIO, "%s: %s", o->tmp, strerror(errno));
    o->f = NULL;
    free(o->buffer);
    o->buffer = NULL;
    if (!o->tmp[0])
        return rc;
    if (keep && rc == 0 && rename(o->tmp, o->path) != 0)
        rc = cmr_fail(CMR_EIO, "renaming %s: %s", o->tmp, strerror(errno));
    if (!keep || rc)
        unlink(o->tmp);
    o->tmp[0] = '\0';
    return rc;
}

static int write_fail(const out_file *o)
{
    return cmr_fail(CMR_EIO, "%s: %s", o->tmp, errno ? strerror(errno) : "write error");
}

/* NPY format 1.0: magic, version, header length, then a Python dict literal
 * padded with spaces to a multiple of 64 bytes so the data stays aligned. */
static int npy_header(out_file *o, uint64_t rows, unsigned cols)
{
    char dict[256];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%" PRIu64 ", %u), }",
                     rows, cols);
    size_t total = 10 + (size_t)n + 1;
    size_t padded = (total + 63) / 64 * 64;
    size_t hlen = padded - 10;
    uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(hlen & 0xff), (uint8_t)(hlen >> 8)};
    if (fwrite(pre, 1, sizeof pre, o->f) != sizeof pre || fwrite(dict, 1, (size_t)n, o->f) != (size_t)n)
        return write_fail(o);
    for (size_t i = (size_t)n; i + 1 < hlen; i++)
        if (fputc(' ', o->f) == EOF)
            return write_fail(o);
    if (fputc('\n', o->f) == EOF)
        return write_fail(o);
    return 0;
}

static int host_little_endian(void)
{
    const uint32_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* '<f4' is little-endian whatever the host is. */
static int npy_row(out_file *o, float *row, unsigned cols)
{
    if (!host_little_endian()) {
        for (unsigned i = 0; i < cols; i++) {
            uint8_t b[4], s[4];
            memcpy(b, &row[i], 4);
            s[0] = b[3], s[1] = b[2], s[2] = b[1], s[3] = b[0];
            memcpy(&row[i], s, 4);
        }
    }
    if (fwrite(row, sizeof *row, cols, o->f) != cols)
        return write_fail(o);
    return 0;
}

static json_t *case_json(const synth_case *c)
{
    char date[11];
    synth_format_date(c->study_date, date);
    const synth_site *site = &synth_sites[c->site];
    json_t *views = json_array(), *dx = json_array(), *sources = json_array();
    for (int v = 0; v < SYNTH_N_VIEWS; v++)
        if (c->views & (1u << v))
            json_array_append_new(views, json_string(synth_view_names[v]));
    for (size_t i = 0; i < c->n_codes; i++)
        json_array_append_new(dx, json_pack("{s:s, s:s, s:s}", "code", c->codes[i]->code, "system",
                                            c->codes[i]->system, "label", c->codes[i]->label));
    json_array_append_new(sources, json_string("synthetic"));
    char sex[2] = {c->sex, '\0'};
    return json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:f, s:s, s:i, s:o, s:o, s:s, s:o}",
                     "row", (json_int_t)c->row, "study_uid", c->study_uid, "patient_id", c->patient_id,
                     "study_date", date, "site", site->name, "manufacturer", site->manufacturer,
                     "scanner_model", site->scanner_model, "field_strength", (double)site->field_strength,
                     "sex", sex, "age", c->age, "views", views, "diagnoses", dx, "impression",
                     c->impression, "sources", sources);
}

static int manifest_head(out_file *o, const synth_params *p, unsigned dim)
{
    char hash[SYNTH_HASH_CHARS];
    synth_weights_hash(p, hash);
    json_t *model = json_pack("{s:s, s:s, s:i}", "name", SYNTH_MODEL_NAME, "weights_hash", hash, "dim",
                              (int)dim);
    if (!model)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    char *m = json_dumps(model, JSON_COMPACT);
    json_decref(model);
    if (!m)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    /* Written by hand around the cases so that they can be streamed. */
    int n = fprintf(o->f,
                    "{\"format\":\"cmrsearch-import/1\",\"model\":%s,"
                    "\"image_vectors\":\"image.npy\",\"text_vectors\":\"text.npy\",\"cases\":[\n",
                    m);
    free(m);
    return n < 0 ? write_fail(o) : 0;
}

static int make_one_dir(const char *dir)
{
    struct stat st;
    if (mkdir(dir, 0777) == 0 || (errno == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode)))
        return 0;
    return cmr_fail(CMR_EIO, "%s: %s", dir, errno == EEXIST ? "exists and is not a directory" : strerror(errno));
}

/* Like mkdir -p: demo scripts name a fresh nested output directory. */
static int make_dir(const char *dir)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s", dir);
    if (n < 0 || (size_t)n >= sizeof path)
        return cmr_fail(CMR_EINVAL, "%s: path too long", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int rc = make_one_dir(path);
        *p = '/';
        if (rc)
            return rc;
    }
    return make_one_dir(path);
}

static int generate(const char *dir, uint64_t n, const synth_params *params)
{
    out_file image = {0}, text = {0}, manifest = {0};
    synth *g = NULL;
    float *iv = NULL, *tv = NULL;
    int rc, show = isatty(STDERR_FILENO);

    if ((rc = make_dir(dir)) || (rc = synth_create(params, &g)))
        goto done;
    unsigned dim = synth_dim(g);
    iv = malloc(dim * sizeof *iv);
    tv = malloc(dim * sizeof *tv);
    if (!iv || !tv) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = out_open(&image, dir, "image.npy")) || (rc = out_open(&text, dir, "text.npy")) ||
        (rc = out_open(&manifest, dir, "manifest.json")) || (rc = npy_header(&image, n, dim)) ||
        (rc = npy_header(&text, n, dim)) || (rc = manifest_head(&manifest, params, dim)))
        goto done;
    uint64_t step = n / 100 ? n / 100 : 1;
    for (uint64_t i = 0; i < n; i++) {
        synth_case c;
        synth_next(g, &c, iv, tv);
        json_t *j = case_json(&c);
        if (!j) {
            rc = cmr_fail(CMR_ENOMEM, "out of memory");
            goto done;
        }
        int jr = json_dumpf(j, manifest.f, JSON_COMPACT);
        json_decref(j);
        if (jr != 0 || fputs(i + 1 < n ? ",\n" : "\n", manifest.f) == EOF) {
            rc = write_fail(&manifest);
            goto done;
        }
        if ((rc = npy_row(&image, iv, dim)) || (rc = npy_row(&text, tv, dim)))
            goto done;
        if (show && (i + 1) % step == 0)
            fprintf(stderr, "\r" PROGRAM ": %" PRIu64 "/%" PRIu64 " cases", i + 1, n);
    }
    if (show)
        fputc('\n', stderr);
    if (fputs("]}\n", manifest.f) == EOF) {
        rc = write_fail(&manifest);
        goto done;
    }
    /* The manifest last: it names the arrays, so it must not appear before them. */
    if ((rc = out_close(&image, 1)) || (rc = out_close(&text, 1)) || (rc = out_close(&manifest, 1)))
        goto done;
done:
    out_close(&image, 0);
    out_close(&text, 0);
    out_close(&manifest, 0);
    synth_free(g);
    free(iv);
    free(tv);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, NULL, 'o'},  {"n", required_argument, NULL, 'n'},
        {"dim", required_argument, NULL, 'd'},  {"seed", required_argument, NULL, 's'},
        {"clusters", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL;
    uint64_t n = 1000, dim = SYNTH_DEFAULT_DIM, seed = 1, clusters = SYNTH_DEFAULT_CLUSTERS;
    int opt, rc = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'o': dir = optarg; break;
        case 'n': rc = synth_parse_u64("--n", optarg, 1, MAX_ROWS, &n); break;
        case 'd': rc = synth_parse_u64("--dim", optarg, 8, 65536, &dim); break;
        case 's': rc = synth_parse_u64("--seed", optarg, 0, UINT64_MAX, &seed); break;
        case 'c': rc = synth_parse_u64("--clusters", optarg, SYNTH_N_DIAGNOSES, 100000, &clusters); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (rc) {
            fprintf(stderr, PROGRAM ": %s\n", cmr_errmsg());
            return 2;
        }
    }
    if (!dir || optind != argc) {
        usage(stderr);
        return 2;
    }
    synth_params p = {.dim = (unsigned)dim, .n_clusters = (unsigned)clusters, .seed = seed, .stream = 0};
    if ((rc = generate(dir, n, &p))) {
        fprintf(stderr, PROGRAM ": %s\n", cmr_errmsg());
        return 1;
    }
    return 0;
}
