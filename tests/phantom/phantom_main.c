/* cmr-phantom: writes a synthetic CMR archive (DICOM studies, reports,
 * truth.json).  Exit codes: 0 ok, 1 bad usage, 2 data or I/O error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libxml/xmlversion.h>
#include <omp.h>

#include "cmr_error.h"
#include "dicom_writer.h"
#include "phantom.h"

static void usage(FILE *f)
{
    fputs("usage: cmr-phantom --out DIR --studies N --seed S [options]\n"
          "  --threads N           worker threads (default: all cores)\n"
          "  --dx KEY              only this diagnosis (normal hcm amyloidosis dcm icm myocarditis\n"
          "                        sarcoidosis lvnc fabry arvc)\n"
          "  --fast                20 phases everywhere (quick test archives)\n"
          "  --sites A,B           only these sites (northgate riverside stmary lakeside hillcrest)\n"
          "  --exclude-dx A,B      no study of these diagnoses (a held-out diagnosis)\n"
          "  --plan-only           write truth.json for the planned studies, no images\n"
          "planted problems (rates in [0,1], default 0):\n"
          "  --problems R          set every rate below to R\n"
          "  --label-noise R       report names another diagnosis (text and code)\n"
          "  --contradictions R    report text right, coded diagnosis wrong\n"
          "  --no-impression R     report without an impression\n"
          "  --duplicates R        study sent again under new UIDs\n"
          "  --missing-views R     study without LGE or without long-axis cines\n"
          "  --corrupt R           one file truncated or with a damaged header\n"
          "variation:\n"
          "  --text-reports R      plain-text reports (default 0.15)\n"
          "  --sr-reports R        DICOM Basic Text SR reports (default 0.10)\n"
          "  --extra-series R      T2 STIR series (default 0.3)\n"
          "  --compress R          scales each site's compressed share (default 1)\n"
          "  --multiframe R        scales the Philips sites' Enhanced MR share (default 1: 35% of\n"
          "                        their studies; 2.86 makes it all of them)\n"
          "  --flow R              studies with an aortic phase-contrast flow series (default 0.3)\n",
          f);
}

static int parse_rate(const char *name, const char *v, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || x < 0 || x > 1e3) {
        fprintf(stderr, "cmr-phantom: %s: bad value '%s'\n", name, v);
        return -1;
    }
    *out = x;
    return 0;
}

int main(int argc, char **argv)
{
    cmr_phantom_opts o = {0};
    o.studies = -1;
    o.text_reports = 0.15;
    o.sr_reports = 0.10;
    o.extra_series = 0.3;
    o.compress_scale = 1.0;
    o.multiframe = 1.0;
    o.flow = 0.3;
    o.dx_only = -1;
    int have_seed = 0, plan_only = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        double *rate = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--fast")) {
            o.fast = 1;
            continue;
        } else if (!strcmp(a, "--plan-only")) {
            plan_only = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "cmr-phantom: %s needs a value\n", a);
            return 1;
        }
        i++;
        if (!strcmp(a, "--out"))
            o.out = v;
        else if (!strcmp(a, "--studies"))
            o.studies = atoi(v);
        else if (!strcmp(a, "--seed")) {
            char *end;
            o.seed = strtoull(v, &end, 10);
            if (*end) {
                fprintf(stderr, "cmr-phantom: --seed: bad value '%s'\n", v);
                return 1;
            }
            have_seed = 1;
        } else if (!strcmp(a, "--threads"))
            o.threads = atoi(v);
        else if (!strcmp(a, "--sites") || !strcmp(a, "--exclude-dx")) {
            /* Comma-separated keys: the sites that may appear, or the
             * diagnoses that may not (a held-out site or diagnosis). */
            int sites = !strcmp(a, "--sites");
            unsigned mask = 0;
            char buf[512];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *save = NULL, *k = strtok_r(buf, ",", &save); k; k = strtok_r(NULL, ",", &save)) {
                int found = -1;
                for (int j = 0; j < (sites ? CMR_NSITES : CMR_DX_COUNT); j++)
                    if (!strcmp(k, sites ? cmr_sites[j].key : cmr_dx_key[j]))
                        found = j;
                if (found < 0) {
                    fprintf(stderr, "cmr-phantom: %s: unknown %s '%s'\n", a, sites ? "site" : "diagnosis", k);
                    return 1;
                }
                mask |= 1u << found;
            }
            if (sites)
                o.site_mask = mask;
            else
                o.dx_exclude = mask;
            if ((!sites && mask == (1u << CMR_DX_COUNT) - 1) || (sites && !mask)) {
                fprintf(stderr, "cmr-phantom: %s leaves nothing to generate\n", a);
                return 1;
            }
        } else if (!strcmp(a, "--dx")) {
            for (int d = 0; d < CMR_DX_COUNT; d++)
                if (!strcmp(v, cmr_dx_key[d]))
                    o.dx_only = d;
            if (o.dx_only < 0) {
                fprintf(stderr, "cmr-phantom: --dx: unknown diagnosis '%s'\n", v);
                return 1;
            }
        } else if (!strcmp(a, "--problems")) {
            double r;
            if (parse_rate(a, v, &r))
                return 1;
            o.label_noise = o.contradiction = o.no_impression = o.duplicate = o.missing_view = o.corrupt = r;
        } else if (!strcmp(a, "--label-noise"))
            rate = &o.label_noise;
        else if (!strcmp(a, "--contradictions"))
            rate = &o.contradiction;
        else if (!strcmp(a, "--no-impression"))
            rate = &o.no_impression;
        else if (!strcmp(a, "--duplicates"))
            rate = &o.duplicate;
        else if (!strcmp(a, "--missing-views"))
            rate = &o.missing_view;
        else if (!strcmp(a, "--corrupt"))
            rate = &o.corrupt;
        else if (!strcmp(a, "--text-reports"))
            rate = &o.text_reports;
        else if (!strcmp(a, "--sr-reports"))
            rate = &o.sr_reports;
        else if (!strcmp(a, "--extra-series"))
            rate = &o.extra_series;
        else if (!strcmp(a, "--compress"))
            rate = &o.compress_scale;
        else if (!strcmp(a, "--multiframe"))
            rate = &o.multiframe;
        else if (!strcmp(a, "--flow"))
            rate = &o.flow;
        else {
            fprintf(stderr, "cmr-phantom: unknown option %s\n", a);
            usage(stderr);
            return 1;
        }
        if (rate && parse_rate(a, v, rate))
            return 1;
    }
    if (!o.out || o.studies <= 0 || !have_seed) {
        usage(stderr);
        return 1;
    }
    if (o.text_reports + o.sr_reports > 1) {
        fprintf(stderr, "cmr-phantom: --text-reports + --sr-reports exceeds 1\n");
        return 1;
    }
    LIBXML_TEST_VERSION;
    cmr_rng_init_tables();
    int rc = cmr_dcm_global_init();
    if (rc) {
        fprintf(stderr, "cmr-phantom: %s\n", cmr_errmsg());
        return 2;
    }
    if ((rc = cmr_mkdirs(o.out))) {
        fprintf(stderr, "cmr-phantom: %s\n", cmr_errmsg());
        return 2;
    }
    cmr_study *st = calloc((size_t)o.studies, sizeof *st);
    if (!st) {
        fprintf(stderr, "cmr-phantom: out of memory\n");
        return 2;
    }
    cmr_phantom_plan(&o, st, o.studies);
    if (o.threads > 0)
        omp_set_num_threads(o.threads);
    int failed = 0, done = 0, tty = isatty(2);
    char firsterr[1024] = "";
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < (plan_only ? 0 : o.studies); i++) {
        int r = cmr_phantom_write_study(&o, &st[i]);
#pragma omp critical
        {
            if (r) {
                if (!failed)
                    snprintf(firsterr, sizeof firsterr, "%s", cmr_errmsg());
                failed++;
            }
            done++;
            if (tty)
                fprintf(stderr, "\rcmr-phantom: %d/%d studies", done, o.studies);
        }
    }
    if (tty)
        fputc('\n', stderr);
    char path[1200];
    snprintf(path, sizeof path, "%s/truth.json", o.out);
    if (!failed && (rc = cmr_truth_write(&o, st, o.studies, path)))
        snprintf(firsterr, sizeof firsterr, "%s", cmr_errmsg());
    free(st);
    cmr_dcm_global_cleanup();
    if (failed || rc) {
        fprintf(stderr, "cmr-phantom: %d studies failed; first: %s\n", failed, firsterr);
        return 2;
    }
    return 0;
}
