/* libFuzzer target for the report entry points (indexer/report.c): every
 * input goes through the sniffer, the CDA parser, the text parser, the
 * manifest parser and linking, so that any seed exercises all of them.
 * Built by tests/report.cmake with clang only; report.c is compiled into
 * this executable directly so that it is instrumented. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_indexer.h"
#include "cmr_report.h"

static void check_report(const cmr_report *r)
{
    /* Everything handed out must be NUL-terminated text. */
    size_t sum = 0;
    if (r->impression)
        sum += strlen(r->impression);
    if (r->findings)
        sum += strlen(r->findings);
    if (r->impression && !r->impression_source)
        __builtin_trap();
    for (size_t i = 0; i < r->n_codes; i++) {
        if (!r->codes[i].code || !r->codes[i].where)
            __builtin_trap();
        sum += strlen(r->codes[i].code);
    }
    for (size_t i = 0; i < r->n_warnings; i++)
        sum += strlen(r->warnings[i]);
    (void)sum;
}

static void link_one(const cmr_report *r, const cmr_manifest *m)
{
    cmr_study st[2];
    memset(st, 0, sizeof st);
    strcpy(st[0].uid, "1.2.3");
    strcpy(st[0].accession, "A1");
    st[0].folder = "/fuzz/a";
    strcpy(st[1].uid, "1.2.4");
    st[1].folder = "/fuzz";
    cmr_archive a;
    memset(&a, 0, sizeof a);
    a.n_studies = 2;
    a.studies = st;
    if (m) {
        long *map = NULL;
        if (cmr_manifest_match(m, &a, &map) == 0) {
            for (int i = 0; i < 2; i++)
                if (map[i] < -1 || map[i] >= (long)m->n_studies)
                    __builtin_trap();
            free(map);
        }
    }
    const char *paths[] = {"/fuzz/a/report.txt"};
    const cmr_report *rs[] = {r};
    cmr_report_link *links = NULL;
    if (cmr_report_link_all(&a, m, paths, rs, 1, &links) == 0) {
        if (links[0].study < -1 || links[0].study > 1)
            __builtin_trap();
        cmr_report_links_free(links, 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    (void)cmr_report_sniff(p, size);

    cmr_report *r = NULL;
    if (cmr_report_parse_cda("/fuzz/a/report.xml", p, size, NULL, &r) == 0) {
        check_report(r);
        link_one(r, NULL);
        cmr_report_free(r);
    }
    r = NULL;
    if (cmr_report_parse_text("/fuzz/a/report.txt", p, size, &r) == 0) {
        check_report(r);
        link_one(r, NULL);
        cmr_report_free(r);
    }
    cmr_manifest *m = NULL;
    if (cmr_manifest_parse("/fuzz/manifest.xml", p, size, &m) == 0) {
        link_one(NULL, m);
        cmr_manifest_free(m);
    }
    return 0;
}
