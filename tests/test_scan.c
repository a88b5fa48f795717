/* indexer/: scanning, grouping, ordering and view classification, on the
 * real files in ../shared/data/real and on small synthetic folders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cmr_indexer.h"
#include "test_store_util.h"

#define REAL CMR_SOURCE_DIR "/../shared/data/real"

static int have_real(void)
{
    struct stat st;
    if (stat(REAL, &st) == 0 && S_ISDIR(st.st_mode))
        return 1;
    print_message("skipped: %s is absent (the shared real DICOM)\n", REAL);
    return 0;
}

static void test_sunnybrook_is_one_cine_sax_stack(void **state)
{
    (void)state;
    if (!have_real())
        skip();
    const char *roots[] = {REAL "/sunnybrook-SCD0000101"};
    cmr_scan_options opts = {.threads = 2};
    cmr_archive *a;
    assert_int_equal(cmr_archive_scan(roots, 1, &opts, &a), 0);
    assert_int_equal(a->n_files_seen, 240);
    assert_int_equal(a->n_dicom, 240);
    assert_int_equal(a->n_studies, 1);
    const cmr_study *st = &a->studies[0];
    assert_int_equal(st->n_series, 1);
    const cmr_series *s = &st->series[0];
    if (s->label != CMR_SERIES_CINE_SAX)
        fail_msg("label %s: %s", cmr_series_label_name(s->label), s->reason);
    assert_int_equal(s->n_slices, 12);
    assert_int_equal(s->n_phases, 20);
    assert_int_equal(s->n_images, 240);
    /* Ordered along the normal, then by trigger time. */
    for (size_t i = 1; i < s->n_images; i++) {
        const cmr_image *p = &s->images[i - 1], *q = &s->images[i];
        assert_true(p->slice < q->slice || (p->slice == q->slice && p->trigger_time < q->trigger_time));
        assert_true(p->slice_coord <= q->slice_coord + 1e-6);
    }
    /* StudyDate 20120000 is not a date: unknown, with an issue naming it. */
    assert_int_equal(st->date, 0);
    assert_string_equal(st->raw_date, "20120000");
    int date_issue = 0;
    for (size_t i = 0; i < a->n_issues; i++)
        date_issue |= strstr(a->issues[i].message, "20120000") != NULL;
    assert_true(date_issue);
    /* UIDs with leading zeros are kept as written. */
    assert_non_null(strstr(st->uid, ".0"));
    assert_string_equal(st->manufacturer, "GE MEDICAL SYSTEMS");
    assert_true(st->field_strength == 1.5);
    cmr_archive_free(a);
}

static void test_philips_multiframe_and_angiogram(void **state)
{
    (void)state;
    if (!have_real())
        skip();
    const char *roots[] = {REAL "/philips-1995-cine-multiframe.dcm", REAL "/xa-coronary-angiogram-jpeg.dcm",
                           REAL "/README.md"};
    cmr_archive *a;
    assert_int_equal(cmr_archive_scan(roots, 3, NULL, &a), 0);
    assert_int_equal(a->n_files_seen, 3);
    assert_int_equal(a->n_dicom, 2);
    assert_int_equal(a->n_studies, 2);
    int seen_cine = 0, seen_xa = 0;
    for (size_t i = 0; i < a->n_studies; i++) {
        const cmr_series *s = &a->studies[i].series[0];
        if (!strcmp(s->modality, "MR")) {
            seen_cine = 1;
            assert_int_equal(s->label, CMR_SERIES_CINE_UNPLACED);
            assert_int_equal(s->n_images, 16);
            assert_int_equal(s->n_phases, 16);
            assert_int_equal(a->studies[i].date, 19950626); /* legacy "1995.06.26" */
        } else {
            seen_xa = 1;
            assert_int_equal(s->label, CMR_SERIES_OTHER);
            assert_int_equal(s->other_kind, CMR_OTHER_NON_MR);
            assert_non_null(strstr(s->reason, "XA"));
            assert_non_null(strstr(s->reason, "not MR"));
        }
    }
    assert_true(seen_cine && seen_xa);
    cmr_archive_free(a);
}

static void test_dates(void **state)
{
    (void)state;
    assert_int_equal(cmr_parse_dicom_date("20190301"), 20190301);
    assert_int_equal(cmr_parse_dicom_date("1995.06.26"), 19950626);
    assert_int_equal(cmr_parse_dicom_date("2001-12-31"), 20011231);
    assert_int_equal(cmr_parse_dicom_date("20120000"), 0);
    assert_int_equal(cmr_parse_dicom_date("20190229"), 0);
    assert_int_equal(cmr_parse_dicom_date("20200229"), 20200229);
    assert_int_equal(cmr_parse_dicom_date("2019031"), 0);
    assert_int_equal(cmr_parse_dicom_date("2019O301"), 0);
    assert_int_equal(cmr_parse_dicom_date(""), 0);
}

static void test_missing_root_and_junk(void **state)
{
    (void)state;
    char *dir = test_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/not-dicom.bin", dir);
    FILE *f = fopen(path, "wb");
    fputs("this is not DICOM at all, but long enough to have a preamble region ......................"
          "..........................................................", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/empty.dcm", dir);
    fclose(fopen(path, "wb"));
    const char *roots[] = {dir};
    cmr_archive *a;
    assert_int_equal(cmr_archive_scan(roots, 1, NULL, &a), 0);
    assert_int_equal(a->n_files_seen, 2);
    assert_int_equal(a->n_dicom, 0);
    assert_int_equal(a->n_studies, 0);
    assert_int_equal(a->n_skipped_non_dicom, 2);
    cmr_archive_free(a);
    const char *missing[] = {"/nonexistent/archive"};
    assert_int_equal(cmr_archive_scan(missing, 1, NULL, &a), CMR_ENOTFOUND);
    assert_non_null(strstr(cmr_errmsg(), "/nonexistent/archive"));
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sunnybrook_is_one_cine_sax_stack),
        cmocka_unit_test(test_philips_multiframe_and_angiogram),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_missing_root_and_junk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
