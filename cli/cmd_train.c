/* cmrsearch train: align a compact model on the store's own (study,
 * impression) pairs (docs/training.md). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmr_cli.h"
#include "cmr_model.h"

#define CMR_TRAIN_ENSEMBLE_MAX 8

static const char usage[] =
    "usage: cmrsearch train --db DIR --out MODEL_DIR [--init MODEL_DIR] [--frames N] [--epochs N] [--batch N]\n"
    "                       [--lr X] [--weight-decay X] [--temperature T] [--learn-temperature]\n"
    "                       [--val-fraction F] [--patience N] [--seed S] [--name NAME]\n"
    "                       [--checkpoint FILE] [--threads N] [--json]\n"
    "       cmrsearch train --db DIR --continue --out MODEL_DIR [--model DIR] [--epochs N] ...\n"
    "\n"
    "Trains the compact model (docs/compact-model.md) on every case of the store\n"
    "that has an impression: its study is read again from the folder recorded at\n"
    "index time, built into the model's input with room for augmentation, and\n"
    "paired with its impression.  No labels are used.  A tenth of the patients\n"
    "(by default) is held out; the epoch with the best validation recall@10 is\n"
    "written to MODEL_DIR.  Deterministic for a seed; with --checkpoint an\n"
    "interrupted run resumes where it stopped.\n"
    "\n"
    "--continue fine-tunes the store's own model (found as --model, then\n"
    "$CMRSEARCH_MODEL, then the default model; it must be the store's) on all\n"
    "its pairs, those indexed since included, writes it to MODEL_DIR, then moves\n"
    "the store to it: every case re-embedded and the model replaced in one\n"
    "transaction (as 'index --reembed'), so the store never mixes two models.\n"
    "Use MODEL_DIR as --model (or $CMRSEARCH_MODEL) from then on.\n"
    "\n"
    "  --init DIR          fine-tune this compact model instead of starting afresh\n"
    "                      (learning rate default 2e-4 instead of 2e-3)\n"
    "  --frames N          a new model's input frames, a multiple of 4 (default 16)\n"
    "  --lge-frames N      recipe \"cine+lge\": the last N frames show the late\n"
    "                      enhancement views, sampled apart from the cines (default\n"
    "                      0: the CMR-CLIP recipe, one sequence; docs/model-input.md)\n"
    "  --resize N          a new model's frames are resized to N x N before the\n"
    "                      centre crop of 64 (default 96: two thirds of the field\n"
    "                      of view; larger crops closer around the heart)\n"
    "  --lexicon L         a new model's text lexicon: cmr-v1 (default) or cmr-v2,\n"
    "                      where \"non\" negates the next word (\"non-ischemic\";\n"
    "                      docs/compact-model.md)\n"
    "  --epochs N          at most N epochs (default 30)\n"
    "  --batch N           pairs per step (default 32)\n"
    "  --lr X              peak learning rate (warm-up 1 epoch, cosine decay)\n"
    "  --temperature T     InfoNCE temperature (default 0.05, fixed as in CMR-CLIP)\n"
    "  --learn-temperature learn it instead\n"
    "  --sentence-keep P   each step shows each sentence of an impression with\n"
    "                      probability P, at least one (default 1: the whole\n"
    "                      impression; a fine-tune: its model's, from model.json);\n"
    "                      short queries look like single sentences\n"
    "  --share-texts       pairs of a step showing the same text are each other's\n"
    "                      partners in the loss, not each other's negatives\n"
    "  --ensemble N        train N members (seeds S, S+1, ...) into MODEL_DIR/member-1..N\n"
    "                      and write MODEL_DIR as their ensemble: every embedding is\n"
    "                      the members' side by side, a similarity their mean\n"
    "                      (docs/model-format.md).  An ensemble given to --continue\n"
    "                      or --init is fine-tuned member by member the same way\n"
    "  --f16               write the weights as F16: half the size, embeddings within\n"
    "                      about 1e-3 of the F32 model's\n"
    "  --patience N        stop after N epochs without a better validation R@10\n"
    "  --checkpoint FILE   save the state after every epoch; resume from it (an\n"
    "                      ensemble: FILE.member-1, FILE.member-2, ...)\n"
    "  --threads N         threads for reading the studies (default: all CPUs)\n";

typedef struct train_inputs {
    size_t n;
    uint8_t **videos;
    char **texts;
    uint64_t *groups;
} train_inputs;

static void free_inputs(train_inputs *in)
{
    for (size_t i = 0; i < in->n; i++) {
        free(in->videos[i]);
        free(in->texts[i]);
    }
    free(in->videos);
    free(in->texts);
    free(in->groups);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The pairs: cases with an impression, their studies read again and built
 * into the training frame cache. */
static int gather(cmr_cli *cli, cmr_store *store, const cmr_model_input *model_in, unsigned threads,
                  train_inputs *out, size_t *missing)
{
    uint64_t *ids = NULL;
    size_t n_ids = 0, n_folders = 0;
    cmr_case **cases = NULL;
    char **folders = NULL;
    cmr_archive *archive = NULL;
    int rc = cmr_store_list(store, &ids, &n_ids);
    memset(out, 0, sizeof *out);
    *missing = 0;
    if (rc)
        return rc;
    if (!(cases = calloc(n_ids ? n_ids : 1, sizeof *cases)) || !(folders = calloc(n_ids ? n_ids : 1, sizeof *folders))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n_ids; i++) {
        cmr_case *c;
        if ((rc = cmr_store_get(store, ids[i], &c)))
            goto done;
        if (!c->impression || !*c->impression || !c->n_sources) {
            cmr_case_free(c);
            continue;
        }
        cases[i] = c;
        folders[n_folders++] = (char *)c->sources[0];
    }
    qsort(folders, n_folders, sizeof *folders, cmp_str);
    size_t unique = 0;
    for (size_t i = 0; i < n_folders; i++)
        if (!unique || strcmp(folders[unique - 1], folders[i]))
            folders[unique++] = folders[i];
    if (!unique) {
        rc = cmr_fail(CMR_EINVAL, "the store has no case with an impression to train on");
        goto done;
    }
    cmr_scan_options so = {.threads = threads, .progress = NULL};
    if ((rc = cmr_archive_scan((const char *const *)folders, unique, &so, &archive)))
        goto done;
    /* Inference's spec (its resize, so its scale), with more frames per
     * segment and a margin around the crop for augmentation. */
    cmr_input_spec spec;
    if ((rc = cmr_cli_spec_from(model_in, "being trained", &spec)))
        goto done;
    spec.frames = model_in->frames * CMR_TRAIN_CANDIDATES;
    spec.lge_frames = model_in->lge_frames * CMR_TRAIN_CANDIDATES;
    spec.size = model_in->size + CMR_TRAIN_MARGIN;
    spec.channels = 1;
    for (int c = 0; c < 3; c++) {
        spec.mean[c] = 0; /* the cache keeps [0, 1] grey; the trainer normalises */
        spec.std[c] = 1;
    }
    size_t per = (size_t)spec.frames * spec.size * spec.size;
    if (!(out->videos = calloc(n_ids, sizeof *out->videos)) || !(out->texts = calloc(n_ids, sizeof *out->texts)) ||
        !(out->groups = calloc(n_ids, sizeof *out->groups))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    /* Study i of the archive → the case with its UID. */
    size_t n_studies = archive->n_studies, done_count = 0;
    cmr_case **match = calloc(n_studies ? n_studies : 1, sizeof *match);
    if (!match) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t s = 0; s < n_studies; s++)
        for (size_t i = 0; i < n_ids; i++)
            if (cases[i] && !strcmp(cases[i]->study_uid, archive->studies[s].uid)) {
                match[s] = cases[i];
                break;
            }
    uint8_t **cache = calloc(n_studies ? n_studies : 1, sizeof *cache);
    if (!cache) {
        free(match);
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t s = 0; s < n_studies; s++) {
        if (!match[s])
            continue;
        cmr_study *st = &archive->studies[s];
        float *t = NULL;
        cmr_tensor_info info;
        if (cmr_study_tensor(st, &spec, &t, &info) == 0 && (cache[s] = malloc(per))) {
            for (size_t k = 0; k < per; k++) {
                float v = t[k] * 255.0f + 0.5f;
                cache[s][k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
        free(t);
#pragma omp critical
        cmr_cli_progress(cli, "building training inputs", ++done_count, n_studies);
    }
    for (size_t s = 0; s < n_studies; s++) {
        if (!cache[s]) {
            *missing += match[s] != NULL;
            continue;
        }
        size_t i = out->n++;
        out->videos[i] = cache[s];
        out->texts[i] = strdup(match[s]->impression);
        uint64_t g = match[s]->id;
        if (match[s]->has_patient_key)
            memcpy(&g, match[s]->patient_key, sizeof g);
        out->groups[i] = g;
        if (!out->texts[i])
            rc = cmr_fail(CMR_ENOMEM, "out of memory");
    }
    free(cache);
    free(match);
done:
    for (size_t i = 0; cases && i < n_ids; i++)
        cmr_case_free(cases[i]);
    free(cases);
    free(folders);
    free(ids);
    cmr_archive_free(archive);
    return rc;
}

static void on_train_progress(void *user, const cmr_train_progress *p)
{
    cmr_cli *cli = user;
    if (!cli->show_progress)
        return;
    if (p->validated)
        fprintf(cli->err, "\repoch %u/%u  loss %.4f  validation loss %.4f  R@1 %.3f  R@5 %.3f  R@10 %.3f  (%.0f s)\n",
                p->epoch, p->epochs, p->loss, p->val_loss, p->val_r1, p->val_r5, p->val_r10, p->seconds);
    else
        fprintf(cli->err, "\repoch %u/%u  step %zu/%zu  loss %.4f  (%.0f s)", p->epoch, p->epochs, p->step, p->steps,
                p->loss, p->seconds);
    fflush(cli->err);
}

static int parse_float(const char *option, const char *text, double lo, double hi, float *out)
{
    char *end;
    double v = text ? strtod(text, &end) : 0;
    if (!text)
        return 0;
    if (end == text || *end || !(v >= lo && v <= hi))
        return cmr_fail(CMR_EINVAL, "%s: '%s' is not a number in [%g, %g]", option, text, lo, hi);
    *out = (float)v;
    return 0;
}

/* The sentence sampling a compact model was trained with (model.json's
 * training.sentence_keep), 1 when it records none: a fine-tune keeps its
 * model's text augmentation unless --sentence-keep says otherwise. */
static float recorded_sentence_keep(const char *model_dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model.json", model_dir);
    json_t *doc = json_load_file(path, 0, NULL);
    json_t *v = json_object_get(json_object_get(doc, "training"), "sentence_keep");
    double keep = json_is_number(v) ? json_number_value(v) : 1;
    json_decref(doc);
    return keep > 0 && keep <= 1 ? (float)keep : 1.0f;
}

/* ---- ensembles ------------------------------------------------------------------------ */

/* What to train: n = 0, one compact model; else n members, named as an
 * ensemble given to --init/--continue names them (from_init), or member-1..n
 * for --ensemble n. */
typedef struct ensemble_plan {
    size_t n;
    int from_init;
    char names[CMR_TRAIN_ENSEMBLE_MAX][64];
    char init_name[128];
} ensemble_plan;

/* init_model: init already opened (--continue opens it to check it against
 * the store), or NULL to open it here. */
static int plan_members(const char *init, cmr_model *init_model, const char *ensemble, ensemble_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    if (ensemble) {
        uint64_t n;
        int rc = cmr_cli_parse_u64("--ensemble", ensemble, 1, CMR_TRAIN_ENSEMBLE_MAX, &n);
        if (rc)
            return rc;
        if (init)
            return cmr_fail(CMR_EINVAL, "--ensemble makes a new ensemble; a fine-tune keeps its model's members");
        plan->n = (size_t)n;
        for (size_t i = 0; i < plan->n; i++)
            snprintf(plan->names[i], sizeof plan->names[i], "member-%zu", i + 1);
        return 0;
    }
    if (!init)
        return 0;
    cmr_model *m = init_model;
    int rc = m ? 0 : cmr_model_open(init, &m);
    if (rc)
        return rc;
    size_t n = cmr_model_member_count(m);
    if (n > CMR_TRAIN_ENSEMBLE_MAX) {
        rc = cmr_fail(CMR_EUNSUPPORTED, "%s: %zu members; this build fine-tunes at most %d", init, n,
                      CMR_TRAIN_ENSEMBLE_MAX);
    } else {
        plan->n = n;
        plan->from_init = n > 0;
        for (size_t i = 0; i < n; i++)
            snprintf(plan->names[i], sizeof plan->names[i], "%s", cmr_model_member_name(m, i));
        snprintf(plan->init_name, sizeof plan->init_name, "%s", cmr_model_name(m));
    }
    if (m != init_model)
        cmr_model_close(m);
    return rc;
}

/* Each member trained as a model of its own (seed S + i), then the
 * ensemble's model.json written over them.  The result: the members' epochs,
 * summed time and mean final loss. */
static int train_members(cmr_cli *cli, const cmr_train_set *set, const cmr_train_options *o, const char *init,
                         const char *name, const ensemble_plan *plan, const char *checkpoint, const char *out_dir,
                         cmr_train_result *r)
{
    char member_out[4096], member_init[4096], member_ckpt[4096];
    const char *names[CMR_TRAIN_ENSEMBLE_MAX];
    memset(r, 0, sizeof *r);
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST)
        return cmr_fail(CMR_EIO, "%s: %s", out_dir, strerror(errno));
    for (size_t i = 0; i < plan->n; i++) {
        cmr_train_options mo = *o;
        mo.seed = o->seed + i;
        mo.name = "cmrsearch-compact"; /* the ensemble carries --name */
        if (plan->from_init) {
            if (snprintf(member_init, sizeof member_init, "%s/%s", init, plan->names[i]) >= (int)sizeof member_init)
                return cmr_fail(CMR_EINVAL, "%s: path too long", init);
            mo.init = member_init;
        }
        if (checkpoint) {
            if (snprintf(member_ckpt, sizeof member_ckpt, "%s.%s", checkpoint, plan->names[i]) >=
                (int)sizeof member_ckpt)
                return cmr_fail(CMR_EINVAL, "%s: path too long", checkpoint);
            mo.checkpoint = member_ckpt;
        }
        if (snprintf(member_out, sizeof member_out, "%s/%s", out_dir, plan->names[i]) >= (int)sizeof member_out)
            return cmr_fail(CMR_EINVAL, "%s: path too long", out_dir);
        if (cli->show_progress)
            fprintf(cli->err, "member %zu of %zu: %s (seed %llu)\n", i + 1, plan->n, plan->names[i],
                    (unsigned long long)mo.seed);
        cmr_train_result mr;
        int rc = cmr_train(set, &mo, member_out, &mr);
        if (rc)
            return cmr_fail_context(rc, "member %s: ", plan->names[i]);
        r->epochs_run = mr.epochs_run;
        r->best_epoch = mr.best_epoch;
        r->n_train = mr.n_train;
        r->n_val = mr.n_val;
        r->best_val_r10 += mr.best_val_r10 / (double)plan->n;
        r->final_loss += mr.final_loss / (double)plan->n;
        r->seconds += mr.seconds;
        r->resumed |= mr.resumed;
        names[i] = plan->names[i];
    }
    const char *ens_name = name ? name : plan->init_name[0] ? plan->init_name : "cmrsearch-compact-ensemble";
    return cmr_model_write_ensemble(out_dir, ens_name, names, plan->n);
}

int cmr_cmd_train(cmr_cli *cli, int argc, char **argv)
{
    const char *db = NULL, *out_dir = NULL, *init = NULL, *epochs = NULL, *batch = NULL, *lr = NULL, *wd = NULL,
               *temp = NULL, *valf = NULL, *patience = NULL, *seed = NULL, *name = NULL, *checkpoint = NULL,
               *threads_text = NULL, *frames = NULL, *lge_frames = NULL, *resize = NULL, *sentence_keep = NULL,
               *lexicon = NULL, *ensemble = NULL;
    int learn_temp = 0, cont = 0, share_texts = 0, f16 = 0;
    const char *model_path = NULL;
    const cmr_cli_option options[] = {
        {"db", 0, &db, NULL},           {"out", 0, &out_dir, NULL},        {"init", 0, &init, NULL},
        {"frames", 0, &frames, NULL},   {"lge-frames", 0, &lge_frames, NULL}, {"resize", 0, &resize, NULL},
        {"lexicon", 0, &lexicon, NULL},
        {"epochs", 0, &epochs, NULL},   {"batch", 0, &batch, NULL},        {"lr", 0, &lr, NULL},
        {"weight-decay", 0, &wd, NULL}, {"temperature", 0, &temp, NULL},   {"val-fraction", 0, &valf, NULL},
        {"patience", 0, &patience, NULL}, {"seed", 0, &seed, NULL},        {"name", 0, &name, NULL},
        {"checkpoint", 0, &checkpoint, NULL}, {"threads", 0, &threads_text, NULL},
        {"learn-temperature", 0, NULL, &learn_temp}, {"json", 0, NULL, &cli->json},
        {"continue", 0, NULL, &cont},   {"model", 0, &model_path, NULL},
        {"sentence-keep", 0, &sentence_keep, NULL}, {"share-texts", 0, NULL, &share_texts},
        {"ensemble", 0, &ensemble, NULL}, {"f16", 0, NULL, &f16},
    };
    const char *extra[1];
    size_t n_extra;
    int rc = cmr_cli_parse_command(cli, argc, argv, options, sizeof options / sizeof *options, usage, extra, 1,
                              &n_extra);
    if (rc)
        return rc < 0 ? rc : 0;
    if (n_extra)
        return cmr_fail(CMR_EINVAL, "unexpected argument '%s' (see 'cmrsearch train --help')", extra[0]);
    if (!out_dir)
        return cmr_fail(CMR_EINVAL, "--out MODEL_DIR is required");
    if (model_path && !cont)
        return cmr_fail(CMR_EINVAL, "--model names the store's model for --continue; to fine-tune another, use --init");
    if (cont && init)
        return cmr_fail(CMR_EINVAL, "--continue fine-tunes the store's own model: give it without --init");
    cmr_train_options o;
    cmr_train_options_init(&o);
    cmr_model *current = NULL;
    if (cont) {
        /* The store's model, checked against the store before any work. */
        cmr_store *check;
        if (!(init = cmr_cli_model_dir(model_path)))
            return cmr_fail(CMR_ENOTFOUND, "--continue: no model to continue (give --model DIR)");
        if ((rc = cmr_cli_open_store(cli, db, CMR_STORE_RDONLY, &check)))
            return rc;
        unsigned dim;
        cmr_store_model(check, NULL, NULL, &dim);
        if (!dim)
            rc = cmr_fail(CMR_EINVAL, "--continue: the store has no model yet (index it with one, or train afresh)");
        else
            rc = cmr_cli_open_model(init, check, 1, &current);
        cmr_store_close(check);
        if (rc) {
            cmr_model_close(current);
            return rc;
        }
        o.epochs = 5; /* a fine-tune: a few passes over the pairs */
    }
    ensemble_plan plan;
    rc = plan_members(init, current, ensemble, &plan);
    cmr_model_close(current);
    if (rc)
        return rc;
    /* The members share the input; the first one speaks for all. */
    char first_member[3072];
    if (init && plan.from_init &&
        snprintf(first_member, sizeof first_member, "%s/%s", init, plan.names[0]) >= (int)sizeof first_member)
        return cmr_fail(CMR_EINVAL, "%s: path too long", init);
    o.init = init && plan.from_init ? first_member : init;
    if (init) {
        o.lr = 2e-4f;
        o.sentence_keep = recorded_sentence_keep(o.init);
    }
    o.f16 = f16;
    uint64_t v;
    if (name)
        o.name = name;
    if ((frames || lge_frames || resize || lexicon) && init)
        return cmr_fail(CMR_EINVAL, "--%s applies to a new model; a fine-tuned one keeps --init's input",
                        frames ? "frames" : lge_frames ? "lge-frames" : resize ? "resize" : "lexicon");
    o.lexicon = lexicon;
    if (frames && !(rc = cmr_cli_parse_u64("--frames", frames, 4, 256, &v)))
        o.frames = (unsigned)v;
    if (!rc && lge_frames && !(rc = cmr_cli_parse_u64("--lge-frames", lge_frames, 0, 255, &v)))
        o.lge_frames = (unsigned)v;
    if (!rc && resize && !(rc = cmr_cli_parse_u64("--resize", resize, 1, 4096, &v)))
        o.resize = (unsigned)v;
    if (!rc && epochs && !(rc = cmr_cli_parse_u64("--epochs", epochs, 1, 10000, &v)))
        o.epochs = (unsigned)v;
    if (!rc && batch && !(rc = cmr_cli_parse_u64("--batch", batch, 2, 4096, &v)))
        o.batch = (unsigned)v;
    if (!rc && patience && !(rc = cmr_cli_parse_u64("--patience", patience, 0, 10000, &v)))
        o.patience = (unsigned)v;
    if (!rc && seed && !(rc = cmr_cli_parse_u64("--seed", seed, 0, UINT64_MAX, &v)))
        o.seed = v;
    uint64_t threads = 0;
    if (!rc && threads_text)
        rc = cmr_cli_parse_u64("--threads", threads_text, 1, 64, &threads);
    if (rc || (rc = parse_float("--lr", lr, 1e-7, 1, &o.lr)) || (rc = parse_float("--weight-decay", wd, 0, 1, &o.weight_decay)) ||
        (rc = parse_float("--temperature", temp, 1e-3, 10, &o.temperature)) ||
        (rc = parse_float("--val-fraction", valf, 0, 0.9, &o.val_fraction)) ||
        (rc = parse_float("--sentence-keep", sentence_keep, 0.01, 1, &o.sentence_keep)))
        return rc;
    o.learn_temperature = learn_temp;
    o.share_texts = share_texts;
    o.checkpoint = checkpoint;
    o.progress = on_train_progress;
    o.progress_user = cli;
    cmr_model_input model_in;
    if ((rc = cmr_train_input(&o, &model_in)))
        return rc;
    cmr_store *store;
    if ((rc = cmr_cli_open_store(cli, db, CMR_STORE_RDONLY, &store)))
        return rc;
    train_inputs in;
    size_t missing = 0;
    rc = gather(cli, store, &model_in, (unsigned)threads, &in, &missing);
    cmr_store_close(store);
    if (rc) {
        free_inputs(&in);
        return rc;
    }
    cmr_train_set set = {.n = in.n, .videos = (const uint8_t *const *)in.videos,
                         .texts = (const char *const *)in.texts, .groups = in.groups};
    cmr_train_result r;
    rc = plan.n ? train_members(cli, &set, &o, init, name, &plan, checkpoint, out_dir, &r)
                : cmr_train(&set, &o, out_dir, &r);
    free_inputs(&in);
    if (rc)
        return rc;
    cmr_reembed_summary moved = {0};
    if (cont) {
        cmr_model *trained = NULL;
        if ((rc = cmr_cli_open_store(cli, db, 0, &store)))
            return rc;
        cmr_store_set_progress(store, cmr_cli_progress, cli);
        if ((rc = cmr_model_open(out_dir, &trained)) == 0)
            rc = cmr_cli_reembed(cli, store, trained, (unsigned)threads, 0, &moved);
        cmr_model_close(trained);
        if ((rc = cmr_cli_close_store(store, rc)))
            return cmr_fail_context(rc, "%s was trained, but the store still holds the old model's vectors: ", out_dir);
    }
    if (cli->json)
        return cmr_cli_print_json(
            cli, json_pack("{s:s, s:I, s:I, s:I, s:i, s:i, s:f, s:f, s:f, s:b, s:I, s:I}", "model", out_dir, "pairs",
                           (json_int_t)set.n, "train_pairs", (json_int_t)r.n_train, "val_pairs", (json_int_t)r.n_val,
                           "epochs_run", (int)r.epochs_run, "best_epoch", (int)r.best_epoch, "best_val_r10",
                           r.best_val_r10, "final_loss", r.final_loss, "seconds", r.seconds, "resumed", r.resumed,
                           "reembedded", (json_int_t)moved.cases, "members", (json_int_t)plan.n));
    fprintf(cli->out, "trained %s on %zu pairs (%zu train, %zu validation%s) in %.0f s\n", out_dir, set.n, r.n_train,
            r.n_val, missing ? ", some studies unreadable" : "", r.seconds);
    fprintf(cli->out, "best epoch %u of %u: validation R@10 %.3f; final training loss %.4f%s\n", r.best_epoch,
            r.epochs_run, r.best_val_r10, r.final_loss, r.resumed ? " (resumed from the checkpoint)" : "");
    if (missing)
        fprintf(cli->out, "%zu studies with an impression could not be built into the model input and were left out\n",
                missing);
    if (cont)
        fprintf(cli->out, "the store now holds %s's vectors: %zu cases re-embedded (%zu image, %zu impression vectors); "
                          "use --model %s from now on\n", out_dir, moved.cases, moved.images, moved.texts, out_dir);
    return 0;
}
