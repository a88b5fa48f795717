/* Report text in a cardiac imager's voice, and the CDA / plain-text writers. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <libxml/xmlwriter.h>

#include "cmr_error.h"
#include "phantom.h"

const cmr_dx_code cmr_dx_codes[CMR_DX_COUNT] = {
    {"17621005", "Normal", "Z03.89", "Encounter for observation for other suspected diseases and conditions ruled out"},
    {"233873004", "Hypertrophic cardiomyopathy", "I42.2", "Other hypertrophic cardiomyopathy"},
    {"17602002", "Amyloidosis", "E85.4", "Organ-limited amyloidosis"},
    {"399020009", "Dilated cardiomyopathy", "I42.0", "Dilated cardiomyopathy"},
    {"426856002", "Ischemic congestive cardiomyopathy", "I25.5", "Ischemic cardiomyopathy"},
    {"50920009", "Myocarditis", "I40.9", "Acute myocarditis, unspecified"},
    {"31541009", "Sarcoidosis", "D86.85", "Sarcoid myocarditis"},
    {"85898001", "Cardiomyopathy", "I42.8", "Other cardiomyopathies"},
    {"16652001", "Fabry's disease", "E75.21", "Fabry (-Anderson) disease"},
    {"281170005", "Arrhythmogenic right ventricular cardiomyopathy", "I42.8", "Other cardiomyopathies"},
};

/* ---- a tiny template expander: {EF} {WT} {EDV} {RVEF} {SEV} {TERR} {WALLS} {NC} {LGE} {LV} {ISCH} ---- */

typedef struct tvars {
    char ef[8], wt[8], edv[8], edvi[8], rvef[8], rvedv[8], sev[16], terr[8], walls[64], nc[8], lge[48], lv[24],
        isch[16], trans[24], myo[16];
} tvars;

static void expand(const tvars *v, const char *tpl, char *out, size_t n)
{
    size_t k = 0;
    while (*tpl && k + 1 < n) {
        if (*tpl == '{') {
            const char *e = strchr(tpl, '}');
            if (e) {
                char name[16];
                size_t len = (size_t)(e - tpl - 1) < sizeof name - 1 ? (size_t)(e - tpl - 1) : sizeof name - 1;
                memcpy(name, tpl + 1, len);
                name[len] = 0;
                const char *val = "";
#define V(x) else if (!strcmp(name, #x)) val = v->x
                if (0) {
                }
                V(ef); V(wt); V(edv); V(edvi); V(rvef); V(rvedv); V(sev); V(terr); V(walls); V(nc); V(lge); V(lv);
                V(isch); V(trans); V(myo);
#undef V
                k += (size_t)snprintf(out + k, n - k, "%s", val);
                if (k >= n)
                    k = n - 1;
                tpl = e + 1;
                continue;
            }
        }
        out[k++] = *tpl++;
    }
    out[k] = 0;
}

#define PICK(r, arr) (arr)[cmr_rng_int((r), 0, (int)(sizeof(arr) / sizeof *(arr)) - 1)]

static void append(char *buf, size_t n, const char *s)
{
    size_t len = strlen(buf);
    if (len < n)
        snprintf(buf + len, n - len, "%s", s);
}

static const char *const imp_normal[] = {
    "Normal cardiac MRI.",
    "Structurally normal heart with normal biventricular size and systolic function (LVEF {ef}%).",
    "No CMR evidence of cardiomyopathy, myocarditis or prior infarction.",
    "Normal {lv} volumes, wall thickness and function (LVEF {ef}%).",
    "Normal study. LVEF {ef}%, RVEF {rvef}%.",
};
static const char *const imp_hcm[] = {
    "Asymmetric septal hypertrophy with maximal wall thickness {wt} mm, consistent with hypertrophic cardiomyopathy.",
    "Findings in keeping with HCM (maximal septal thickness {wt} mm) with hyperdynamic {lv} function (LVEF {ef}%).",
    "Hypertrophic cardiomyopathy, asymmetric septal phenotype, maximal wall thickness {wt} mm.",
    "{sev} asymmetric septal hypertrophy ({wt} mm) - phenotype of hypertrophic cardiomyopathy.",
};
static const char *const imp_hcm_apical[] = {
    "Apical hypertrophic cardiomyopathy (apical wall thickness {wt} mm) with systolic cavity obliteration.",
    "Apical variant HCM: apical wall thickness {wt} mm, 'ace of spades' cavity.",
    "Hypertrophy confined to the apex ({wt} mm), consistent with apical HCM (Yamaguchi).",
};
static const char *const imp_amyloid[] = {
    "Concentric biventricular hypertrophy with diffuse subendocardial {lge} and abnormal gadolinium kinetics, highly suggestive of cardiac amyloidosis.",
    "Appearances are consistent with cardiac amyloid infiltration ({lv} wall thickness {wt} mm, LVEF {ef}%).",
    "Features typical of cardiac amyloidosis: concentric LVH ({wt} mm), biatrial dilatation, small pericardial effusion and global subendocardial enhancement.",
    "Infiltrative cardiomyopathy, most likely amyloid. Difficult myocardial nulling with dark blood pool on LGE.",
};
static const char *const imp_dcm[] = {
    "Dilated {lv} with {sev} global systolic impairment (LVEF {ef}%), consistent with non-{isch} dilated cardiomyopathy.",
    "Non-{isch} DCM. LVEDV {edv} ml ({edvi} ml/m2), LVEF {ef}%.",
    "Dilated cardiomyopathy: dilated, thin-walled, globally hypokinetic {lv} (LVEF {ef}%).",
    "{sev} LV dilatation and systolic dysfunction (EF {ef}%) without an {isch} pattern of scar: DCM.",
};
static const char *const imp_icm[] = {
    "Prior {terr} territory myocardial infarction with {trans} {lge} and akinesis of the {walls}.",
    "{isch} cardiomyopathy: LVEF {ef}%, {trans} infarct in the {terr} territory.",
    "Old MI in the {terr} distribution ({walls}) with {trans} scar; LVEF {ef}%.",
    "Chronic {terr} infarct, {trans}, with regional thinning and akinesis. {isch} cardiomyopathy with LVEF {ef}%.",
};
static const char *const imp_myocarditis[] = {
    "Subepicardial {lge} of the lateral wall in a non-{isch} pattern, consistent with myocarditis.",
    "Findings compatible with myocarditis (subepicardial inferolateral {lge}).",
    "Non-{isch} subepicardial enhancement of the basal to mid lateral wall: myocarditis.",
    "Appearances meet the updated Lake Louise criteria for acute myocarditis. LVEF {ef}%.",
};
static const char *const imp_sarcoid[] = {
    "Patchy mid-wall and subepicardial {lge} of the basal septum, suspicious for cardiac sarcoidosis.",
    "Appearances raise the possibility of cardiac sarcoid (patchy basal septal {lge}), LVEF {ef}%.",
    "Cardiac sarcoidosis likely: patchy non-{isch} {lge} involving the basal septum and lateral wall.",
    "Multifocal patchy {myo} enhancement with basal septal predominance - sarcoidosis should be considered.",
};
static const char *const imp_lvnc[] = {
    "Prominent {lv} trabeculation with non-compacted to compacted ratio of {nc} in diastole, meeting CMR criteria for LV non-compaction.",
    "LVNC: NC/C ratio {nc}, LVEF {ef}%.",
    "Hypertrabeculated {lv} (NC:C {nc}) consistent with left ventricular non-compaction cardiomyopathy.",
    "Left ventricular noncompaction (Petersen ratio {nc}) with {sev} systolic impairment, LVEF {ef}%.",
};
static const char *const imp_fabry[] = {
    "Concentric LVH (maximal wall thickness {wt} mm) with basal inferolateral mid-wall {lge}, typical of Anderson-Fabry disease.",
    "Findings suggestive of Fabry cardiomyopathy: concentric hypertrophy ({wt} mm) and inferolateral mid-wall scar.",
    "In the context of Fabry disease, appearances are consistent with cardiac involvement (LVH {wt} mm).",
};
static const char *const imp_fabry_nolge[] = {
    "Concentric LVH ({wt} mm) without {lge}. In a patient with Fabry disease this represents cardiac involvement.",
    "Concentric hypertrophy, maximal wall thickness {wt} mm, attributed to known Anderson-Fabry disease.",
};
static const char *const imp_arvc[] = {
    "Dilated right ventricle (RVEF {rvef}%) with regional dyskinesia of the RV free wall, fulfilling major imaging Task Force criteria for arrhythmogenic cardiomyopathy.",
    "ARVC: dilated RV (RVEDV {rvedv} ml) with free wall dyskinesia and microaneurysms, RVEF {rvef}%.",
    "RV dilatation and dysfunction with regional wall motion abnormality; appearances consistent with arrhythmogenic right ventricular cardiomyopathy.",
    "Arrhythmogenic cardiomyopathy with RV involvement: RVEF {rvef}%, dyskinetic RV free wall.",
};

static const char *const rec_by_dx[CMR_DX_COUNT][3] = {
    {"", "", "No further imaging required."},
    {"Recommend first-degree family screening.", "Consider genetic testing and SCD risk stratification (HCM Risk-SCD).", "Assess for LVOT obstruction with echocardiography at rest and on Valsalva."},
    {"Suggest serum free light chains and DPD/PYP scintigraphy.", "Recommend haematology review.", "Correlate with ECG voltages and biopsy if indicated."},
    {"Consider ICD evaluation if LVEF remains 35% or less on optimal medical therapy.", "Recommend genetic counselling.", "Suggest follow-up CMR after optimisation of heart failure therapy."},
    {"Viability assessment as above may guide revascularisation.", "Recommend coronary angiography if not already performed.", "Consider ICD if LVEF remains 35% or less."},
    {"Suggest follow-up CMR in 3-6 months.", "Recommend clinical correlation with troponin and inflammatory markers.", "Avoid competitive sport pending follow-up."},
    {"Recommend FDG-PET to assess disease activity.", "Suggest ambulatory ECG monitoring.", "Correlate with chest CT for extracardiac sarcoidosis."},
    {"Recommend family screening.", "Suggest clinical correlation and anticoagulation review.", "Consider genetic testing."},
    {"Suggest native T1 mapping at follow-up.", "Recommend enzyme replacement therapy review.", "Correlate with alpha-galactosidase A activity."},
    {"Recommend ambulatory ECG monitoring and family screening.", "Consider electrophysiology referral.", "Correlate with 2010 Task Force criteria (ECG, signal-averaged ECG)."},
};

static const char *const incidental[] = {
    "Incidental small hiatus hernia.",
    "Incidental simple hepatic cyst.",
    "Small bilateral pleural effusions.",
    "Incidental 5 mm left lower lobe pulmonary nodule; follow-up as per Fleischner guidance.",
    "Mildly dilated ascending aorta (38 mm).",
    "Incidental renal cyst, left kidney.",
    "Trace mitral regurgitation.",
};

static const char *lge_phrase(const char *pattern)
{
    static const char *const map[][2] = {
        {"rv_insertion_midwall", "patchy mid-wall enhancement at the superior and inferior RV insertion points"},
        {"apical_patchy", "patchy enhancement of the hypertrophied apical segments"},
        {"diffuse_subendocardial", "diffuse circumferential subendocardial enhancement"},
        {"diffuse_transmural", "diffuse transmural enhancement with difficulty nulling the myocardium"},
        {"septal_midwall", "linear mid-wall enhancement of the interventricular septum"},
        {"subendocardial", "subendocardial enhancement in a coronary distribution"},
        {"transmural", "transmural enhancement in a coronary distribution"},
        {"subepicardial_lateral", "subepicardial enhancement of the basal to mid lateral wall"},
        {"patchy_basal_septum", "patchy mid-wall and subepicardial enhancement of the basal septum"},
        {"basal_inferolateral_midwall", "mid-wall enhancement of the basal inferolateral wall"},
        {"subepicardial_inferolateral", "subepicardial enhancement of the inferolateral wall"},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (!strcmp(pattern, map[i][0]))
            return map[i][1];
    return "focal enhancement";
}

static const char *walls_of(const char *terr)
{
    if (!strcmp(terr, "LAD"))
        return "anterior wall, anteroseptum and apex";
    if (!strcmp(terr, "RCA"))
        return "inferior wall and inferoseptum";
    return "lateral and inferolateral walls";
}

static int uk_spelling(const cmr_study *s) { return s->site == 0 || s->site == 2; }

static void fill_vars(cmr_rng *r, const cmr_study *s, int dx, tvars *v)
{
    const cmr_heart_params *p = &s->hp;
    double bsa = sqrt(s->height_m * 100 * s->weight_kg / 3600.0);
    snprintf(v->ef, sizeof v->ef, "%d", (int)lround(p->lvef * 100));
    snprintf(v->wt, sizeof v->wt, "%d", (int)lround(p->max_wall_mm));
    snprintf(v->edv, sizeof v->edv, "%d", (int)lround(p->lvedv_ml));
    snprintf(v->edvi, sizeof v->edvi, "%d", (int)lround(p->lvedv_ml / bsa));
    snprintf(v->rvef, sizeof v->rvef, "%d", (int)lround(p->rvef * 100));
    snprintf(v->rvedv, sizeof v->rvedv, "%d", (int)lround(p->rvedv_ml));
    static const char *const sev[] = {"mild", "mild", "moderate", "severe"};
    int sv = p->severity < 0 || p->severity > 3 ? 0 : p->severity;
    if (dx != s->dx)
        sv = cmr_rng_int(r, 1, 3); /* mislabelled reports describe what they claim */
    snprintf(v->sev, sizeof v->sev, "%s", sev[sv]);
    snprintf(v->terr, sizeof v->terr, "%s", p->territory[0] && dx == s->dx ? p->territory : PICK(r, ((const char *[]){"LAD", "RCA", "LCx"})));
    snprintf(v->walls, sizeof v->walls, "%s", walls_of(v->terr));
    snprintf(v->nc, sizeof v->nc, "%.1f", p->nc_ratio > 0 ? p->nc_ratio : cmr_rng_range(r, 2.4, 3.5));
    int abbrev = cmr_rng_chance(r, 0.6);
    snprintf(v->lge, sizeof v->lge, "%s", abbrev ? "LGE" : "late gadolinium enhancement");
    snprintf(v->lv, sizeof v->lv, "%s", cmr_rng_chance(r, 0.6) ? "LV" : "left ventricular");
    snprintf(v->isch, sizeof v->isch, "%s", uk_spelling(s) ? "ischaemic" : "ischemic");
    int transmural = strstr(p->lge_pattern, "transmural") != NULL;
    snprintf(v->trans, sizeof v->trans, "%s",
             dx != s->dx ? "subendocardial" : transmural ? (cmr_rng_chance(r, 0.5) ? "transmural" : "full-thickness")
                                                         : (cmr_rng_chance(r, 0.5) ? "subendocardial" : "partial-thickness"));
    snprintf(v->myo, sizeof v->myo, "%s", uk_spelling(s) ? "myocardial" : "myocardial");
}

/* Capitalises the first letter of each sentence (templates may start a
 * sentence with a variable such as {isch}). */
static void cap_first(char *s)
{
    int start = 1;
    for (char *p = s; *p; p++) {
        if (start && *p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
        if (*p == '.' && (p[1] == ' ' || p[1] == 0))
            start = 1;
        else if (*p != ' ')
            start = 0;
    }
}

void cmr_report_text(cmr_rng *r, const cmr_study *s, int dx, char *fnd, size_t fn, char *imp, size_t in)
{
    const cmr_heart_params *p = &s->hp;
    tvars v;
    fill_vars(r, s, dx, &v);
    char line[1024];
    const char *lines[8];
    char store[8][1024];
    int nl = 0;
    const char *main_tpl;
    int has_lge = strcmp(p->lge_pattern, "none") != 0 || dx != s->dx;
    switch (dx) {
    case CMR_DX_HCM:
        main_tpl = p->apical_variant && dx == s->dx ? PICK(r, imp_hcm_apical) : PICK(r, imp_hcm);
        break;
    case CMR_DX_AMYLOID: main_tpl = PICK(r, imp_amyloid); break;
    case CMR_DX_DCM: main_tpl = PICK(r, imp_dcm); break;
    case CMR_DX_ICM: main_tpl = PICK(r, imp_icm); break;
    case CMR_DX_MYOCARDITIS: main_tpl = PICK(r, imp_myocarditis); break;
    case CMR_DX_SARCOID: main_tpl = PICK(r, imp_sarcoid); break;
    case CMR_DX_LVNC: main_tpl = PICK(r, imp_lvnc); break;
    case CMR_DX_FABRY: main_tpl = has_lge ? PICK(r, imp_fabry) : PICK(r, imp_fabry_nolge); break;
    case CMR_DX_ARVC: main_tpl = PICK(r, imp_arvc); break;
    default: main_tpl = PICK(r, imp_normal); break;
    }
    expand(&v, main_tpl, store[nl], sizeof store[0]);
    cap_first(store[nl]);
    lines[nl] = store[nl];
    nl++;

    /* Supporting statements and negations, in varying order and number. */
    const char *extra[8];
    int ne = 0;
    if (dx == CMR_DX_HCM && has_lge)
        extra[ne++] = cmr_rng_chance(r, 0.5) ? "Patchy mid-wall {lge} at the RV insertion points." : "Patchy {myo} fibrosis in the hypertrophied segments.";
    /* Reports state the LGE finding either way (SCMR reporting guidance);
     * until generator version 3, ARVC reports never did. */
    if ((dx == CMR_DX_HCM || dx == CMR_DX_DCM || dx == CMR_DX_FABRY || dx == CMR_DX_LVNC || dx == CMR_DX_NORMAL ||
         dx == CMR_DX_ARVC) &&
        !has_lge)
        extra[ne++] = cmr_rng_chance(r, 0.5) ? "No late gadolinium enhancement." : "No {lge} to suggest replacement fibrosis or infarction.";
    if (dx == CMR_DX_DCM && has_lge)
        extra[ne++] = "Septal mid-wall {lge} (non-{isch} pattern).";
    if (dx == CMR_DX_ARVC && has_lge)
        extra[ne++] = "Subepicardial {lge} of the inferolateral wall, indicating left ventricular involvement.";
    if (dx == CMR_DX_ICM)
        extra[ne++] = strstr(v.trans, "sub") || strstr(v.trans, "partial") ? "The affected segments are viable (less than 50% transmural scar)."
                                                                           : "The infarcted segments are non-viable.";
    if (dx != CMR_DX_AMYLOID && dx != CMR_DX_SARCOID && cmr_rng_chance(r, 0.5))
        extra[ne++] = "No evidence of infiltrative disease.";
    if (dx != CMR_DX_ARVC && cmr_rng_chance(r, 0.4))
        extra[ne++] = "Normal RV size and function (RVEF {rvef}%).";
    if (p->effusion_mm > 0 && dx == s->dx)
        extra[ne++] = "Small pericardial effusion.";
    else if (cmr_rng_chance(r, 0.3))
        extra[ne++] = "No pericardial effusion.";
    if (dx != CMR_DX_NORMAL && cmr_rng_chance(r, 0.6) && rec_by_dx[dx][0][0])
        extra[ne++] = rec_by_dx[dx][cmr_rng_int(r, 0, 2)];
    if (cmr_rng_chance(r, 0.2))
        extra[ne++] = PICK(r, incidental);
    for (int i = ne - 1; i > 0; i--) {
        int j = cmr_rng_int(r, 0, i);
        const char *t = extra[i];
        extra[i] = extra[j], extra[j] = t;
    }
    int keep = ne == 0 ? 0 : cmr_rng_int(r, ne > 2 ? ne - 2 : 0, ne);
    for (int i = 0; i < keep && nl < 8; i++) {
        expand(&v, extra[i], store[nl], sizeof store[0]);
        cap_first(store[nl]);
        lines[nl] = store[nl];
        nl++;
    }
    int style = cmr_rng_int(r, 0, 2);
    imp[0] = 0;
    for (int i = 0; i < nl; i++) {
        if (style == 0)
            snprintf(line, sizeof line, "%d. %s\n", i + 1, lines[i]);
        else if (style == 1)
            snprintf(line, sizeof line, "%s%s", lines[i], i + 1 < nl ? " " : "\n");
        else
            snprintf(line, sizeof line, "- %s\n", lines[i]);
        append(imp, in, line);
    }

    /* Findings: measured values consistent with the generated heart. */
    fnd[0] = 0;
    double ef = p->lvef * 100;
    const char *fn_lv = p->lvedv_ml > 200 ? "dilated" : (p->lvedv_ml < 90 ? "small" : "normal in size");
    const char *fn_fx = ef >= 70 ? "hyperdynamic" : ef >= 55 ? "normal" : ef >= 45 ? "mildly impaired" : ef >= 35 ? "moderately impaired" : "severely impaired";
    if (dx != s->dx)
        fn_lv = "normal in size", fn_fx = "preserved";
    snprintf(line, sizeof line,
             "The left ventricle is %s (LVEDV %s ml, %s ml/m2) with %s systolic function, LVEF %s%%. ", fn_lv, v.edv,
             v.edvi, fn_fx, v.ef);
    append(fnd, fn, line);
    snprintf(line, sizeof line, "Maximal end-diastolic wall thickness %s mm (septum %.0f mm, lateral wall %.0f mm). ",
             v.wt, p->septal_wall_mm, p->lateral_wall_mm);
    append(fnd, fn, line);
    if (p->rv_bulge > 0 && dx == s->dx)
        snprintf(line, sizeof line, "The right ventricle is dilated (RVEDV %s ml) with regional free-wall dyskinesia, RVEF %s%%. ", v.rvedv, v.rvef);
    else
        snprintf(line, sizeof line, "The right ventricle measures RVEDV %s ml with RVEF %s%%. ", v.rvedv, v.rvef);
    append(fnd, fn, line);
    if (p->la_scale > 1.2 && dx == s->dx)
        append(fnd, fn, p->ra_scale > 1.2 ? "Both atria are dilated. " : "The left atrium is dilated. ");
    if (!s->has_lge)
        append(fnd, fn, "Late gadolinium enhancement imaging was not performed. ");
    else if (!has_lge)
        append(fnd, fn, "No late gadolinium enhancement. ");
    else {
        expand(&v, "{lge}: ", line, sizeof line);
        append(fnd, fn, line);
        append(fnd, fn, dx == s->dx ? lge_phrase(p->lge_pattern) : "focal enhancement");
        append(fnd, fn, ". ");
    }
    append(fnd, fn, p->effusion_mm > 0 && dx == s->dx ? "Small pericardial effusion." : "No pericardial effusion.");
}

/* ---- writers ---- */

#define X(call)                                                                                                        \
    do {                                                                                                               \
        if ((call) < 0) {                                                                                              \
            rc = cmr_fail(CMR_EIO, "%s: XML write failed", path);                                                      \
            goto fail;                                                                                                 \
        }                                                                                                              \
    } while (0)

static int write_text_block(xmlTextWriterPtr w, const char *text, int as_list)
{
    /* One paragraph or list item per line / sentence group. */
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", text);
    if (as_list && xmlTextWriterStartElement(w, BAD_CAST "list") < 0)
        return -1;
    char *save = NULL;
    for (char *tok = strtok_r(buf, "\n", &save); tok; tok = strtok_r(NULL, "\n", &save)) {
        if (!*tok)
            continue;
        if (xmlTextWriterWriteElement(w, BAD_CAST(as_list ? "item" : "paragraph"), BAD_CAST tok) < 0)
            return -1;
    }
    if (as_list && xmlTextWriterEndElement(w) < 0)
        return -1;
    return 0;
}

static const char *given_of(const char *pn, char *buf, size_t n)
{
    const char *c = strchr(pn, '^');
    snprintf(buf, n, "%s", c ? c + 1 : "");
    return buf;
}

static const char *family_of(const char *pn, char *buf, size_t n)
{
    const char *c = strchr(pn, '^');
    size_t len = c ? (size_t)(c - pn) : strlen(pn);
    snprintf(buf, n, "%.*s", (int)len, pn);
    return buf;
}

static int write_dx_entry(xmlTextWriterPtr w, int code_dx)
{
    const cmr_dx_code *c = &cmr_dx_codes[code_dx];
    if (xmlTextWriterStartElement(w, BAD_CAST "entry") < 0 || xmlTextWriterStartElement(w, BAD_CAST "observation") < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "classCode", BAD_CAST "OBS") < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "moodCode", BAD_CAST "EVN") < 0 ||
        xmlTextWriterStartElement(w, BAD_CAST "code") < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "code", BAD_CAST "29308-4") < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "codeSystem", BAD_CAST "2.16.840.1.113883.6.1") < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "codeSystemName", BAD_CAST "LOINC") < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "displayName", BAD_CAST "Diagnosis") < 0 ||
        xmlTextWriterEndElement(w) < 0 || xmlTextWriterStartElement(w, BAD_CAST "statusCode") < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "code", BAD_CAST "completed") < 0 || xmlTextWriterEndElement(w) < 0 ||
        xmlTextWriterStartElement(w, BAD_CAST "value") < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "xsi:type", BAD_CAST "CD") < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "code", BAD_CAST c->icd10) < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "codeSystem", BAD_CAST "2.16.840.1.113883.6.90") < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "codeSystemName", BAD_CAST "ICD-10-CM") < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "displayName", BAD_CAST c->icd10_display) < 0 ||
        xmlTextWriterStartElement(w, BAD_CAST "translation") < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "code", BAD_CAST c->snomed) < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "codeSystem", BAD_CAST "2.16.840.1.113883.6.96") < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "codeSystemName", BAD_CAST "SNOMED CT") < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "displayName", BAD_CAST c->snomed_display) < 0 ||
        xmlTextWriterEndElement(w) < 0 || xmlTextWriterEndElement(w) < 0 || xmlTextWriterEndElement(w) < 0 ||
        xmlTextWriterEndElement(w) < 0)
        return -1;
    return 0;
}

static int start_code(xmlTextWriterPtr w, const char *code, const char *sys, const char *sysname, const char *disp)
{
    if (xmlTextWriterStartElement(w, BAD_CAST "code") < 0 || xmlTextWriterWriteAttribute(w, BAD_CAST "code", BAD_CAST code) < 0 ||
        xmlTextWriterWriteAttribute(w, BAD_CAST "codeSystem", BAD_CAST sys) < 0 ||
        (sysname && xmlTextWriterWriteAttribute(w, BAD_CAST "codeSystemName", BAD_CAST sysname) < 0) ||
        (disp && xmlTextWriterWriteAttribute(w, BAD_CAST "displayName", BAD_CAST disp) < 0) ||
        xmlTextWriterEndElement(w) < 0)
        return -1;
    return 0;
}

static int el_attr(xmlTextWriterPtr w, const char *el, const char *a1, const char *v1, const char *a2, const char *v2)
{
    if (xmlTextWriterStartElement(w, BAD_CAST el) < 0 || xmlTextWriterWriteAttribute(w, BAD_CAST a1, BAD_CAST v1) < 0 ||
        (a2 && xmlTextWriterWriteAttribute(w, BAD_CAST a2, BAD_CAST v2) < 0) || xmlTextWriterEndElement(w) < 0)
        return -1;
    return 0;
}

int cmr_report_write_cda(const cmr_study *s, const char *path, const char *findings, const char *impression)
{
    int rc = 0;
    char tmp[128], site_oid[64], when[24], docid[80];
    snprintf(site_oid, sizeof site_oid, "1.2.826.0.1.3680043.10.1071.%d", s->site + 1);
    snprintf(when, sizeof when, "%s%.4s", s->study_date, s->study_time);
    snprintf(docid, sizeof docid, "%s.%d", s->study_uid, 9);
    char dir[1200];
    snprintf(dir, sizeof dir, "%s", path);
    char *sl = strrchr(dir, '/');
    if (sl) {
        *sl = 0;
        if ((rc = cmr_mkdirs(dir)))
            return rc;
    }
    xmlTextWriterPtr w = xmlNewTextWriterFilename(path, 0);
    if (!w)
        return cmr_fail(CMR_EIO, "%s: cannot create", path);
    X(xmlTextWriterSetIndent(w, 1));
    X(xmlTextWriterStartDocument(w, NULL, "UTF-8", NULL));
    X(xmlTextWriterStartElement(w, BAD_CAST "ClinicalDocument"));
    X(xmlTextWriterWriteAttribute(w, BAD_CAST "xmlns", BAD_CAST "urn:hl7-org:v3"));
    X(xmlTextWriterWriteAttribute(w, BAD_CAST "xmlns:xsi", BAD_CAST "http://www.w3.org/2001/XMLSchema-instance"));
    X(el_attr(w, "realmCode", "code", uk_spelling(s) ? "GB" : "US", NULL, NULL));
    X(el_attr(w, "typeId", "root", "2.16.840.1.113883.1.3", "extension", "POCD_HD000040"));
    X(el_attr(w, "templateId", "root", "1.2.840.10008.9.1", NULL, NULL));
    X(el_attr(w, "id", "root", docid, NULL, NULL));
    X(start_code(w, "18748-4", "2.16.840.1.113883.6.1", "LOINC", "Diagnostic imaging study"));
    X(xmlTextWriterWriteElement(w, BAD_CAST "title", BAD_CAST "Cardiac MRI report"));
    X(el_attr(w, "effectiveTime", "value", when, NULL, NULL));
    X(el_attr(w, "confidentialityCode", "code", "N", "codeSystem", "2.16.840.1.113883.5.25"));
    X(el_attr(w, "languageCode", "code", uk_spelling(s) ? "en-GB" : "en-US", NULL, NULL));

    X(xmlTextWriterStartElement(w, BAD_CAST "recordTarget"));
    X(xmlTextWriterStartElement(w, BAD_CAST "patientRole"));
    X(el_attr(w, "id", "root", site_oid, "extension", s->patient_id));
    X(xmlTextWriterStartElement(w, BAD_CAST "patient"));
    X(xmlTextWriterStartElement(w, BAD_CAST "name"));
    X(xmlTextWriterWriteElement(w, BAD_CAST "given", BAD_CAST given_of(s->patient_name, tmp, sizeof tmp)));
    X(xmlTextWriterWriteElement(w, BAD_CAST "family", BAD_CAST family_of(s->patient_name, tmp, sizeof tmp)));
    X(xmlTextWriterEndElement(w));
    X(el_attr(w, "administrativeGenderCode", "code", s->sex, "codeSystem", "2.16.840.1.113883.5.1"));
    X(el_attr(w, "birthTime", "value", s->birth_date, NULL, NULL));
    X(xmlTextWriterEndElement(w));
    X(xmlTextWriterEndElement(w));
    X(xmlTextWriterEndElement(w));

    X(xmlTextWriterStartElement(w, BAD_CAST "author"));
    X(el_attr(w, "time", "value", when, NULL, NULL));
    X(xmlTextWriterStartElement(w, BAD_CAST "assignedAuthor"));
    snprintf(tmp, sizeof tmp, "RAD%02d", (int)(s->index % 7) + 1);
    X(el_attr(w, "id", "root", site_oid, "extension", tmp));
    X(xmlTextWriterEndElement(w));
    X(xmlTextWriterEndElement(w));

    X(xmlTextWriterStartElement(w, BAD_CAST "custodian"));
    X(xmlTextWriterStartElement(w, BAD_CAST "assignedCustodian"));
    X(xmlTextWriterStartElement(w, BAD_CAST "representedCustodianOrganization"));
    X(el_attr(w, "id", "root", site_oid, NULL, NULL));
    X(xmlTextWriterWriteElement(w, BAD_CAST "name", BAD_CAST cmr_sites[s->site].institution));
    X(xmlTextWriterEndElement(w));
    X(xmlTextWriterEndElement(w));
    X(xmlTextWriterEndElement(w));

    X(xmlTextWriterStartElement(w, BAD_CAST "inFulfillmentOf"));
    X(xmlTextWriterStartElement(w, BAD_CAST "order"));
    X(el_attr(w, "id", "root", site_oid, "extension", s->accession));
    X(xmlTextWriterEndElement(w));
    X(xmlTextWriterEndElement(w));

    X(xmlTextWriterStartElement(w, BAD_CAST "documentationOf"));
    X(xmlTextWriterStartElement(w, BAD_CAST "serviceEvent"));
    X(xmlTextWriterWriteAttribute(w, BAD_CAST "classCode", BAD_CAST "ACT"));
    X(el_attr(w, "id", "root", s->study_uid, NULL, NULL));
    X(start_code(w, "24627-2", "2.16.840.1.113883.6.1", "LOINC", "MR Heart"));
    X(el_attr(w, "effectiveTime", "value", when, NULL, NULL));
    X(xmlTextWriterEndElement(w));
    X(xmlTextWriterEndElement(w));

    X(xmlTextWriterStartElement(w, BAD_CAST "component"));
    X(xmlTextWriterStartElement(w, BAD_CAST "structuredBody"));
    /* Findings */
    X(xmlTextWriterStartElement(w, BAD_CAST "component"));
    X(xmlTextWriterStartElement(w, BAD_CAST "section"));
    X(start_code(w, "59776-5", "2.16.840.1.113883.6.1", "LOINC", "Procedure Findings"));
    X(xmlTextWriterWriteElement(w, BAD_CAST "title", BAD_CAST "Findings"));
    X(xmlTextWriterStartElement(w, BAD_CAST "text"));
    X(write_text_block(w, findings, 0));
    X(xmlTextWriterEndElement(w));
    if (!impression[0])
        X(write_dx_entry(w, s->code_dx));
    X(xmlTextWriterEndElement(w));
    X(xmlTextWriterEndElement(w));
    if (impression[0]) {
        X(xmlTextWriterStartElement(w, BAD_CAST "component"));
        X(xmlTextWriterStartElement(w, BAD_CAST "section"));
        X(start_code(w, "19005-8", "2.16.840.1.113883.6.1", "LOINC", "Radiology Imaging study [Impression] (narrative)"));
        X(xmlTextWriterWriteElement(w, BAD_CAST "title", BAD_CAST "Impression"));
        X(xmlTextWriterStartElement(w, BAD_CAST "text"));
        X(write_text_block(w, impression, strchr(impression, '\n') != strrchr(impression, '\n')));
        X(xmlTextWriterEndElement(w));
        X(write_dx_entry(w, s->code_dx));
        X(xmlTextWriterEndElement(w));
        X(xmlTextWriterEndElement(w));
    }
    X(xmlTextWriterEndElement(w)); /* structuredBody */
    X(xmlTextWriterEndElement(w)); /* component */
    X(xmlTextWriterEndElement(w)); /* ClinicalDocument */
    X(xmlTextWriterEndDocument(w));
fail:
    xmlFreeTextWriter(w);
    return rc;
}

int cmr_report_write_text(const cmr_study *s, const char *path, const char *findings, const char *impression,
                          cmr_rng *r)
{
    char dir[1200];
    snprintf(dir, sizeof dir, "%s", path);
    char *sl = strrchr(dir, '/');
    if (sl) {
        *sl = 0;
        int rc = cmr_mkdirs(dir);
        if (rc)
            return rc;
    }
    FILE *f = fopen(path, "w");
    if (!f)
        return cmr_fail(CMR_EIO, "%s: cannot create", path);
    static const char *const heads[] = {"IMPRESSION:", "FINAL IMPRESSION:", "CONCLUSION:", "Impression:"};
    const char *head = heads[cmr_rng_int(r, 0, 3)];
    const cmr_dx_code *c = &cmr_dx_codes[s->code_dx];
    fprintf(f, "%s\nCARDIAC MRI REPORT\n\n", cmr_sites[s->site].institution);
    fprintf(f, "Patient: %s   MRN: %s   DOB: %.4s-%.2s-%.2s   Sex: %s\n", s->patient_name, s->patient_id,
            s->birth_date, s->birth_date + 4, s->birth_date + 6, s->sex);
    fprintf(f, "Accession: %s\nStudy Instance UID: %s\nExam date: %.4s-%.2s-%.2s\n\n", s->accession, s->study_uid,
            s->study_date, s->study_date + 4, s->study_date + 6);
    fprintf(f, "TECHNIQUE:\nCine SSFP in short- and long-axis planes%s%s at %.1f T.\n\n",
            s->has_stir ? ", T2-weighted STIR" : "", s->has_lge ? " and late gadolinium enhancement imaging" : "",
            s->field_t);
    fprintf(f, "FINDINGS:\n%s\n\n", findings);
    if (impression[0])
        fprintf(f, "%s\n%s\n", head, impression);
    fprintf(f, "Coded diagnosis: %s %s (SNOMED CT %s)\n", c->icd10, c->icd10_display, c->snomed);
    if (fclose(f) != 0)
        return cmr_fail(CMR_EIO, "%s: write failed", path);
    return 0;
}
