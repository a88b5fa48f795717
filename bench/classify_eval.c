/* classify-eval: scan a phantom archive and compare every series' label with
 * the generator's truth.json (the indexer never reads truth.json; this
 * program and the tests do).
 *
 *   classify-eval ARCHIVE [--json]
 *
 * A cine or LGE series is right when its label names the same view; a
 * localizer, STIR, flow or mapping series when it is "other" of that kind.
 * Prints accuracy, the confusion table and each mistake with its reason. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cmr_indexer.h"

static const char *predicted_kind(const cmr_series *s)
{
    if (s->label != CMR_SERIES_OTHER)
        return cmr_series_label_name(s->label);
    switch (s->other_kind) {
    case CMR_OTHER_LOCALIZER: return "localizer";
    case CMR_OTHER_STIR: return "t2_stir";
    case CMR_OTHER_FLOW: return "flow";
    case CMR_OTHER_MAPPING: return "mapping";
    default: return "other";
    }
}

static const cmr_series *find_series(const cmr_archive *a, const char *uid)
{
    for (size_t i = 0; i < a->n_studies; i++)
        for (size_t j = 0; j < a->studies[i].n_series; j++)
            if (!strcmp(a->studies[i].series[j].uid, uid))
                return &a->studies[i].series[j];
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fprintf(argc < 2 ? stderr : stdout, "usage: classify-eval ARCHIVE [--json]\n");
        return argc < 2;
    }
    int json = argc > 2 && !strcmp(argv[2], "--json");
    char truth_path[4096];
    snprintf(truth_path, sizeof truth_path, "%s/truth.json", argv[1]);
    json_error_t jerr;
    json_t *truth = json_load_file(truth_path, 0, &jerr);
    if (!truth) {
        fprintf(stderr, "classify-eval: %s:%d: %s\n", truth_path, jerr.line, jerr.text);
        return 2;
    }
    const char *roots[] = {argv[1]};
    cmr_archive *a;
    if (cmr_archive_scan(roots, 1, NULL, &a) != 0) {
        fprintf(stderr, "classify-eval: %s\n", cmr_errmsg());
        return 2;
    }
    size_t total = 0, right = 0, missing = 0;
    json_t *mistakes = json_array(), *confusion = json_object();
    size_t i;
    json_t *study;
    json_array_foreach(json_object_get(truth, "study_list"), i, study)
    {
        size_t j;
        json_t *ser;
        json_array_foreach(json_object_get(study, "series"), j, ser)
        {
            const char *kind = json_string_value(json_object_get(ser, "kind"));
            const char *uid = json_string_value(json_object_get(ser, "uid"));
            if (!kind || !uid || !strcmp(kind, "sr_report"))
                continue; /* reports are not image series */
            const cmr_series *s = find_series(a, uid);
            if (!s) {
                missing++; /* e.g. a planted corrupt file took the whole series */
                continue;
            }
            total++;
            const char *got = predicted_kind(s);
            char key[96];
            snprintf(key, sizeof key, "%s -> %s", kind, got);
            json_t *c = json_object_get(confusion, key);
            json_object_set_new(confusion, key, json_integer(c ? json_integer_value(c) + 1 : 1));
            if (!strcmp(kind, got))
                right++;
            else
                json_array_append_new(mistakes, json_pack("{s:s, s:s, s:s, s:s}", "series", uid, "truth", kind,
                                                          "label", got, "reason", s->reason));
        }
    }
    double acc = total ? (double)right / (double)total : 0;
    if (json) {
        json_t *doc = json_pack("{s:s, s:I, s:I, s:I, s:f, s:o, s:o}", "archive", argv[1], "series",
                                (json_int_t)total, "correct", (json_int_t)right, "not_found", (json_int_t)missing,
                                "accuracy", acc, "confusion", confusion, "mistakes", mistakes);
        char *text = json_dumps(doc, JSON_INDENT(1) | JSON_SORT_KEYS);
        puts(text);
        free(text);
        json_decref(doc);
    } else {
        printf("%s: %zu of %zu series labelled as generated (%.2f%%); %zu not found\n", argv[1], right, total,
               100 * acc, missing);
        const char *key;
        json_t *v;
        json_object_foreach(confusion, key, v) printf("  %-28s %lld\n", key, (long long)json_integer_value(v));
        size_t k;
        json_array_foreach(mistakes, k, v) printf("  mistake: %s (%s, labelled %s): %s\n",
                                                  json_string_value(json_object_get(v, "series")),
                                                  json_string_value(json_object_get(v, "truth")),
                                                  json_string_value(json_object_get(v, "label")),
                                                  json_string_value(json_object_get(v, "reason")));
        json_decref(confusion);
        json_decref(mistakes);
    }
    cmr_archive_free(a);
    json_decref(truth);
    return 0;
}
