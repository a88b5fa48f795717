#!/usr/bin/python3
"""End-to-end test of the web page in headless Chromium.

Generates a phantom archive with planted duplicates, indexes it, starts
`cmrsearch serve` on a free loopback port and drives the page over the Chrome
DevTools Protocol (python3-websocket): text query -> results grid -> hovering a
card plays its cine -> opening a case shows its impression -> a study dropped
on the compare page finds itself (its cine plays from the dropped DICOM) ->
the audit page lists every planted duplicate pair of truth.json.  Also: no
request leaves the server's origin, no script error, no horizontal overflow on
a narrow window.

  web_e2e.py --cmrsearch BIN --phantom BIN [--model DIR] [--screenshots DIR] [--keep]

Exit 0 pass, 1 fail, 77 skipped (only when no chromium is installed).
"""
import argparse
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile

SKIP = 77
# Images are rendered on first request: a cine from a 240-frame Enhanced MR
# JPEG-LS file takes seconds (tens on a loaded machine).
IMAGE_WAIT = 90
T0 = time.monotonic()


def log(msg):
    print('[%5.1fs] %s' % (time.monotonic() - T0, msg), flush=True)


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


class CDP:
    """A minimal DevTools Protocol client over one page target."""

    def __init__(self, ws_url):
        import websocket  # python3-websocket
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def send(self, method, params=None, timeout=30):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({'id': mid, 'method': method, 'params': params or {}}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get('id') == mid:
                if 'error' in msg:
                    raise Fail('%s: %s' % (method, msg['error'].get('message')))
                return msg.get('result', {})
            if 'method' in msg:
                self.events.append(msg)
        raise Fail('%s: no answer in %d s' % (method, timeout))

    def eval(self, expr, await_promise=True):
        r = self.send('Runtime.evaluate', {'expression': expr, 'returnByValue': True,
                                           'awaitPromise': await_promise})
        if 'exceptionDetails' in r:
            d = r['exceptionDetails']
            raise Fail('page script failed: %s' % (d.get('exception', {}).get('description') or d.get('text')))
        return r['result'].get('value')

    def wait(self, expr, what, timeout=20, page_error_ok=False):
        """Polls expr until truthy; an error the page shows ends the wait."""
        error = "(e => e && !e.hidden ? e.textContent : '')(document.querySelector('#error'))"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.eval(expr)
            if v:
                return v
            err = not page_error_ok and self.eval(error)
            if err:
                raise Fail('waiting for %s, the page says: %s' % (what, err))
            time.sleep(0.1)
        err = self.eval(error)
        raise Fail('timed out after %d s waiting for %s%s' % (timeout, what, ('; page says: ' + err) if err else ''))

    def screenshot(self, path):
        data = self.send('Page.captureScreenshot', {'format': 'png'})['data']
        with open(path, 'wb') as f:
            f.write(base64.b64decode(data))
        log('screenshot %s' % path)

    def mouse(self, kind, x, y, button='none', clicks=0):
        self.send('Input.dispatchMouseEvent', {'type': kind, 'x': x, 'y': y, 'button': button, 'clickCount': clicks})

    def center(self, selector):
        r = self.eval("(() => { const e = document.querySelector(%s); if (!e) return null; e.scrollIntoView({block: 'nearest'});"
                      " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
                      % json.dumps(selector))
        check(r, 'no element %s on the page' % selector)
        return r


def apng_frames(data):
    """Frame count of a PNG: acTL's num_frames for an APNG, 1 otherwise."""
    check(data[:8] == b'\x89PNG\r\n\x1a\n', 'the cine is not a PNG')
    p, frames, fctl = 8, 1, 0
    while p + 8 <= len(data):
        n, kind = struct.unpack('>I4s', data[p:p + 8])
        if kind == b'acTL':
            frames = struct.unpack('>I', data[p + 8:p + 12])[0]
        elif kind == b'fcTL':
            fctl += 1
        p += 12 + n
    check(fctl == frames or frames == 1, 'APNG says %d frames but has %d fcTL chunks' % (frames, fctl))
    return frames


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(base, path, raw=False):
    with urllib.request.urlopen(base + path, timeout=30) as r:
        data = r.read()
    return data if raw else json.loads(data)


def run(cmd, **kw):
    log('$ ' + ' '.join(cmd))
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if r.returncode != 0:
        raise Fail('%s exited %d: %s' % (cmd[0], r.returncode, (r.stderr or r.stdout)[-2000:]))
    return r.stdout


def scratch_dir():
    """A RAM disk when there is one with room: the test writes ~200 MB of
    archive and throws it away, which costs tens of seconds on a busy disk."""
    try:
        st = os.statvfs('/dev/shm')
        if st.f_bavail * st.f_frsize > 2 << 30 and os.access('/dev/shm', os.W_OK):
            return '/dev/shm'
    except OSError:
        pass
    return None


def find_chromium(arg):
    for c in [arg, os.environ.get('CHROMIUM'), 'chromium', 'chromium-browser', 'google-chrome']:
        if c and shutil.which(c):
            return shutil.which(c)
    return None


def start_chromium(exe, profile):
    cmd = [exe, '--headless=new', '--remote-debugging-port=0', '--user-data-dir=' + profile,
           '--no-first-run', '--no-default-browser-check', '--disable-gpu', '--disable-extensions',
           '--disable-background-networking', '--disable-component-update', '--disable-sync',
           '--window-size=1280,800', '--hide-scrollbars', '--mute-audio', 'about:blank']
    if os.geteuid() == 0:
        cmd.insert(1, '--no-sandbox')  # Chromium refuses to run as root with its sandbox
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    port_file = os.path.join(profile, 'DevToolsActivePort')
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Fail('chromium exited %d: %s' % (proc.returncode, proc.stderr.read().decode()[-1500:]))
        if os.path.exists(port_file):
            lines = open(port_file).read().split('\n')
            if len(lines) >= 2 and lines[0].strip():
                return proc, int(lines[0])
        time.sleep(0.05)
    raise Fail('chromium wrote no DevToolsActivePort in 30 s')


def page_target(port):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        targets = json.loads(urllib.request.urlopen('http://127.0.0.1:%d/json/list' % port, timeout=5).read())
        pages = [t for t in targets if t.get('type') == 'page']
        if pages:
            return pages[0]['webSocketDebuggerUrl']
        time.sleep(0.1)
    raise Fail('chromium has no page target')


def stop(proc, grace=5):
    if proc and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_server(exe, db, work, extra=()):
    """`cmrsearch serve` on a free loopback port, once it answers /health."""
    port = free_port()
    base = 'http://127.0.0.1:%d' % port
    cmd = [exe, 'serve', '--db', db, '--listen', '127.0.0.1:%d' % port] + list(extra)
    log('$ ' + ' '.join(cmd))
    path = os.path.join(work, 'serve-%d.log' % port)
    server = subprocess.Popen(cmd, stdout=open(path, 'w'), stderr=subprocess.STDOUT, start_new_session=True)
    server.log_path = path
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        check(server.poll() is None, 'cmrsearch serve exited %s: %s' % (server.returncode, open(path).read()[-1500:]))
        try:
            urllib.request.urlopen(base + '/api/v1/health', timeout=5).close()
            return server, base
        except urllib.error.HTTPError:
            return server, base  # it answers (401 with a token file)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    stop(server)
    raise Fail('the server did not answer /api/v1/health in 30 s')


SANITIZER_REPORTS = ('ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:')


def check_server_log(server, path):
    """After a sanitizer build's server stopped: no report in its log."""
    text = open(path, errors='replace').read()
    for marker in SANITIZER_REPORTS:
        i = text.find(marker)
        check(i < 0, 'cmrsearch serve (%s) reported: %s' % (os.path.basename(path), text[max(0, i - 200):i + 1500]))
    check(server.returncode == 0, 'cmrsearch serve exited %s on SIGTERM: %s' % (server.returncode, text[-1500:]))


def study_files(path):
    out = []
    for root, _, files in os.walk(path):
        out += [os.path.abspath(os.path.join(root, f)) for f in sorted(files)]
    return sorted(out)


def pick_study(truth, archive, compressed):
    """An original study with a short-axis cine, compressed or not."""
    for s in truth['study_list']:
        p = s['protocol']
        if s.get('duplicate_of') or p.get('multiframe') or not s.get('series'):
            continue
        if (p['transfer_syntax'] != 'explicit-le') != compressed:
            continue
        if any(x['kind'] == 'cine_sax' for x in s['series']) and not s.get('bad_file') and not s.get('problems'):
            return s, study_files(os.path.join(archive, s['dir']))
    return None, []


def scenario(cdp, base, truth, archive, shots, cases):
    def shot(name):
        if shots:
            cdp.screenshot(os.path.join(shots, name))

    cdp.send('Emulation.setDeviceMetricsOverride', {'width': 1280, 'height': 800, 'deviceScaleFactor': 1,
                                                    'mobile': False})
    cdp.send('Page.navigate', {'url': base + '/'})
    cdp.wait("document.readyState === 'complete' && /cases/.test(document.querySelector('#status').textContent)",
             'the page to load and report the store')

    # Trainee: a phrase typed into the search box, submitted with Enter.
    phrase = 'concentric hypertrophy with late gadolinium enhancement'
    x, y = cdp.center('#q')
    cdp.mouse('mousePressed', x, y, 'left', 1)
    cdp.mouse('mouseReleased', x, y, 'left', 1)
    cdp.send('Input.insertText', {'text': phrase})
    for kind in ('rawKeyDown', 'char', 'keyUp'):
        cdp.send('Input.dispatchKeyEvent', {'type': kind, 'key': 'Enter', 'code': 'Enter',
                                            'windowsVirtualKeyCode': 13, 'text': '\r'})
    want = min(24, cases)
    n = cdp.wait("document.querySelectorAll('#results .card').length >= %d && "
                 "document.querySelectorAll('#results .card').length" % want, 'the results grid')
    check(n == want, 'the grid shows %d cards, expected %d' % (n, want))
    summary = cdp.eval("document.querySelector('#search-summary').textContent")
    check(phrase in summary, 'the summary does not name the query: %r' % summary)
    cdp.wait("[...document.querySelectorAll('#results img.thumb')].slice(0, 6).every(i => i.complete && i.naturalWidth > 0)",
             'the first thumbnails to load', IMAGE_WAIT)
    log('text query: %d cards (%s)' % (n, summary))

    # A chip is a clause of the filter: "female" -> sex = F on every card.
    females = sum(1 for s in truth['study_list'] if s['sex'] == 'F')
    x, y = cdp.center('#filters .chip[data-group=sex][data-value=F]')
    cdp.mouse('mousePressed', x, y, 'left', 1)
    cdp.mouse('mouseReleased', x, y, 'left', 1)
    cdp.wait("/sex = F/.test(document.querySelector('#where-line').textContent) && "
             "!document.querySelector('#results').hasAttribute('aria-busy') && "
             "/of \\d+ matching/.test(document.querySelector('#search-summary').textContent)", 'the filtered results')
    sexes = cdp.eval("[...document.querySelectorAll('#results .card')].map(e => e.dataset.sex)")
    check(sexes and all(s == 'F' for s in sexes), 'the "female" chip left other sexes: %s' % sexes)
    check(len(sexes) <= females, '%d cards for %d female studies' % (len(sexes), females))
    log('chip "female": %d cards, all F (%s)' %
        (len(sexes), cdp.eval("document.querySelector('#where-line code').textContent")))
    cdp.wait("[...document.querySelectorAll('#results img.thumb')].slice(0, 6).every(i => i.complete && i.naturalWidth > 0)",
             'the filtered thumbnails to load', IMAGE_WAIT)

    # Hovering a card swaps its thumbnail for the animated cine.
    first = '#results li:first-child .card'
    case_id = int(cdp.eval("document.querySelector('%s').dataset.id" % first))
    x, y = cdp.center(first + ' img')
    cdp.mouse('mouseMoved', x, y)
    src = cdp.wait("(() => { const i = document.querySelector('%s img'); "
                   "return /cine\\.png/.test(i.src) && i.complete && i.naturalWidth > 0 && i.src; })()" % first,
                   'the hovered card to load its cine', IMAGE_WAIT)
    frames = apng_frames(get(base, src[len(base):], raw=True))
    check(frames > 1, 'the cine of case %d has %d frame(s): it does not animate' % (case_id, frames))
    log('hover: case %d plays %s (%d frames)' % (case_id, src[len(base):], frames))
    shot('web-search.png')

    # Opening the case shows its impression (the server's own text).
    cdp.mouse('mousePressed', x, y, 'left', 1)
    cdp.mouse('mouseReleased', x, y, 'left', 1)
    record = get(base, '/api/v1/cases/%d' % case_id)
    cdp.wait("location.hash === '#/case/%d' && !document.querySelector('#view-case').hidden" % case_id,
             'the case page')
    imp = cdp.wait("(() => { const t = document.querySelector('#case-impression').textContent; "
                   "return t !== 'Loading…' && t; })()", 'the impression')
    check(record.get('impression') and imp.strip() == record['impression'].strip(),
          'case %d: the page shows %r, the API says %r' % (case_id, imp[:80], (record.get('impression') or '')[:80]))
    cdp.wait("[...document.querySelectorAll('#case-media img')].length > 0 && "
             "[...document.querySelectorAll('#case-media img')].every(i => i.complete && i.naturalWidth > 0)",
             "the case's views", IMAGE_WAIT)
    log('case %d: impression shown, %d views' % (case_id, cdp.eval("document.querySelectorAll('#case-media img').length")))
    shot('web-case.png')

    # Clinician: a study's DICOM files chosen on the compare page, matched on
    # images only.  The study is in the store, so it must find itself (or its
    # resent duplicate) first, at image similarity 1.
    study, files = pick_study(truth, archive, compressed=False)
    check(study, 'the archive has no uncompressed study to drop')
    cdp.eval("location.hash = '#/study'")
    cdp.wait("!document.querySelector('#view-study').hidden", 'the compare page')
    x, y = cdp.center('input[name=matchon][value=image]')
    cdp.mouse('mousePressed', x, y, 'left', 1)
    cdp.mouse('mouseReleased', x, y, 'left', 1)
    check(cdp.eval("document.querySelector('input[name=matchon][value=image]').checked"), '"images only" not chosen')
    doc = cdp.send('DOM.getDocument')
    node = cdp.send('DOM.querySelector', {'nodeId': doc['root']['nodeId'], 'selector': '#pick-files'})
    cdp.send('DOM.setFileInputFiles', {'nodeId': node['nodeId'], 'files': files})
    n = cdp.wait("document.querySelectorAll('#compare .pair').length", 'the comparison of the dropped study', 60)
    top = int(cdp.eval("document.querySelector('#compare .pair').dataset.id"))
    top_uid = get(base, '/api/v1/cases/%d' % top)['study_uid']
    same = {study['study_uid']} | {s['study_uid'] for s in truth['study_list']
                                   if s.get('duplicate_of') == study['study_uid']}
    check(top_uid in same, 'the dropped study %s found case %d (%s) first, not itself' %
          (study['study_uid'], top, top_uid))
    sim = float(cdp.eval("document.querySelector('#compare .pair').dataset.image"))
    check(sim > 0.999, 'the dropped study matches itself at image similarity %.4f, not 1' % sim)
    f1 = cdp.wait("(() => { const c = document.querySelector('#compare canvas.query'); return c && c.dataset.frame; })()",
                  'the query cine to start')
    time.sleep(0.3)
    f2 = cdp.eval("document.querySelector('#compare canvas.query').dataset.frame")
    check(f1 != f2, 'the query cine does not play (frame %s then %s)' % (f1, f2))
    cdp.wait("[...document.querySelectorAll('#compare img.cine')].every(i => i.complete && i.naturalWidth > 0)",
             'the hits\' cines', IMAGE_WAIT)
    log('study drop: %d files -> %d hits, first is case %d (itself); query cine plays' % (len(files), n, top))
    time.sleep(0.5)
    shot('web-compare.png')

    cstudy, cfiles = pick_study(truth, archive, compressed=True)
    if cstudy:
        node = cdp.send('DOM.querySelector', {'nodeId': doc['root']['nodeId'], 'selector': '#pick-files'})
        cdp.send('DOM.setFileInputFiles', {'nodeId': node['nodeId'], 'files': cfiles})
        msg = cdp.wait("(() => { const t = document.querySelector('#study-summary').textContent; "
                       "return !/Reading/.test(t) && t; })()", 'the compressed study\'s comparison', 60)
        check('Preview unavailable' in msg and 'compressed' in msg,
              'a compressed study should say its preview is unavailable: %r' % msg)
        log('compressed study: %r' % msg[msg.index('Preview'):])

    # A zip of the same study: searched the same, without a preview.
    zpath = os.path.join(os.path.dirname(archive), 'study.zip')
    root = os.path.join(archive, study['dir'])
    with zipfile.ZipFile(zpath, 'w', zipfile.ZIP_STORED) as z:
        for f in files:
            z.write(f, os.path.relpath(f, root))
    node = cdp.send('DOM.querySelector', {'nodeId': doc['root']['nodeId'], 'selector': '#pick-zip'})
    cdp.send('DOM.setFileInputFiles', {'nodeId': node['nodeId'], 'files': [zpath]})
    msg = cdp.wait("(() => { const t = document.querySelector('#study-summary').textContent; "
                   "return !/Reading/.test(t) && t; })()", 'the zipped study\'s comparison', 60)
    check('Preview unavailable for a zip' in msg, 'a zip should say it has no preview: %r' % msg)
    ztop = int(cdp.eval("document.querySelector('#compare .pair').dataset.id"))
    check(get(base, '/api/v1/cases/%d' % ztop)['study_uid'] in same, 'the zipped study did not find itself first')
    log('zipped study: finds case %d first; %r' % (ztop, msg[msg.index('Preview'):]))

    # Curator: the audit page lists every planted duplicate pair.
    cdp.eval("location.hash = '#/audit'")
    cdp.wait("document.querySelectorAll('#bars-dx li').length > 0", 'the counts per diagnosis')
    cdp.wait("/findings/.test(document.querySelector('#audit-summary').textContent)", 'the audit', 60)
    rows = cdp.eval("[...document.querySelectorAll('#audit-rows tr[data-kind=duplicate]')]"
                    ".map(r => r.dataset.cases.split(',').filter(Boolean).map(Number))")
    uid_of = {}
    for ids in rows:
        for i in ids:
            if i not in uid_of:
                uid_of[i] = get(base, '/api/v1/cases/%d' % i)['study_uid']
    listed = [{uid_of[i] for i in ids} for ids in rows]
    planted = [(s['study_uid'], s['duplicate_of']) for s in truth['study_list'] if s.get('duplicate_of')]
    check(planted, 'the phantom planted no duplicates')
    for dup, orig in planted:
        check(any(dup in pair and orig in pair for pair in listed),
              'the audit page does not list the planted duplicate %s of %s (duplicate rows: %s)' % (dup, orig, rows))
    cdp.wait("[...document.querySelectorAll('#audit-rows img.mini')].every(i => i.complete && i.naturalWidth > 0)",
             "the audit's thumbnails", IMAGE_WAIT)
    log('audit: %d duplicate rows list all %d planted pairs' % (len(rows), len(planted)))
    shot('web-audit.png')

    # A narrow window: one column, nothing wider than the screen.
    cdp.send('Emulation.setDeviceMetricsOverride', {'width': 400, 'height': 800, 'deviceScaleFactor': 1,
                                                    'mobile': True})
    for view in ('#/search?text=' + urllib.request.quote(phrase), '#/case/%d' % case_id, '#/study', '#/audit'):
        cdp.eval("location.hash = %s" % json.dumps(view))
        time.sleep(0.8)
        w = cdp.eval("document.documentElement.scrollWidth")
        check(w <= 402, 'at 400 px wide %s is %d px wide (horizontal scrolling)' % (view, w))
    log('narrow window: no horizontal overflow')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cmrsearch', required=True)
    ap.add_argument('--phantom', required=True)
    ap.add_argument('--model', help='the model directory (default: $CMRSEARCH_MODEL, else the default model)')
    ap.add_argument('--chromium')
    ap.add_argument('--screenshots', help='save PNGs of each page here')
    ap.add_argument('--seed', type=int, default=11)
    ap.add_argument('--studies', type=int, default=40)
    ap.add_argument('--keep', action='store_true', help='keep the work directory')
    ap.add_argument('--work-dir', help='where the work directory goes (default: /dev/shm if it has room, else $TMPDIR)')
    a = ap.parse_args()

    chromium = find_chromium(a.chromium)
    if not chromium:
        print('SKIP: no chromium found (Debian package chromium; scripts/setup.sh installs it)')
        return SKIP
    try:
        import websocket
        del websocket  # only checked here; CDP imports it
    except ImportError:
        print('FAIL: python3-websocket is not installed (scripts/setup.sh installs it)')
        return 1

    if a.model:
        os.environ['CMRSEARCH_MODEL'] = os.path.abspath(a.model)
    work = tempfile.mkdtemp(prefix='cmr-web-', dir=a.work_dir or scratch_dir())
    server = browser = None
    try:
        archive, db = os.path.join(work, 'archive'), os.path.join(work, 'db')
        run([a.phantom, '--out', archive, '--studies', str(a.studies), '--seed', str(a.seed),
             '--duplicates', '0.1', '--compress', '0.9', '--fast'])
        truth = json.load(open(os.path.join(archive, 'truth.json')))
        run([a.cmrsearch, 'init', '--db', db])
        run([a.cmrsearch, 'index', '--db', db, archive])

        server, base = start_server(a.cmrsearch, db, work)
        health = get(base, '/api/v1/health')
        log('server up: %s' % json.dumps(health))

        profile = os.path.join(work, 'chromium')
        browser, dport = start_chromium(chromium, profile)
        cdp = CDP(page_target(dport))
        for domain in ('Page', 'Runtime', 'Network', 'DOM', 'Log'):
            cdp.send(domain + '.enable')
        if a.screenshots:
            os.makedirs(a.screenshots, exist_ok=True)
        scenario(cdp, base, truth, archive, a.screenshots, health['cases'])

        # Nothing but the server (and the page's own blob: URLs) was asked for.
        cdp.eval('1')  # events are read with answers: collect the last ones
        urls = [e['params']['request']['url'] for e in cdp.events if e['method'] == 'Network.requestWillBeSent']
        outside = [u for u in urls if not u.startswith(base) and not u.startswith(('blob:', 'data:'))]
        check(not outside, 'the page reached outside its server: %s' % outside[:5])
        errors = [e['params']['exceptionDetails'] for e in cdp.events if e['method'] == 'Runtime.exceptionThrown']
        check(not errors, 'script errors on the page: %s' %
              [(d.get('exception', {}).get('description') or d.get('text')) for d in errors][:3])
        # The server's Content-Security-Policy refuses inline styles and scripts.
        refused = [e['params']['entry']['text'] for e in cdp.events if e['method'] == 'Log.entryAdded'
                   and (e['params']['entry']['source'] in ('security', 'javascript')
                        or 'Content Security Policy' in e['params']['entry']['text'])]
        check(not refused, 'the browser refused parts of the page: %s' % refused[:3])
        log('%d requests, all to the server; no script errors' % len(urls))

        # With a token file every API request needs the token: the page says
        # so, takes it in its field (sessionStorage) and then works, images too.
        stop(server, 60)  # a sanitizer build checks for leaks on the way out
        check_server_log(server, server.log_path)
        secret = base64.b32encode(os.urandom(15)).decode().lower()
        tokens = os.path.join(work, 'tokens')
        with open(tokens, 'w') as f:
            f.write('e2e:%s\n' % secret)
        os.chmod(tokens, 0o600)
        server, base = start_server(a.cmrsearch, db, work, ['--token-file', tokens])
        cdp.send('Emulation.setDeviceMetricsOverride', {'width': 1280, 'height': 800, 'deviceScaleFactor': 1,
                                                        'mobile': False})
        cdp.send('Page.navigate', {'url': base + '/#/search?text=dilated%20left%20ventricle'})
        cdp.wait("(e => e && /access token/.test(e.textContent))(document.querySelector('#error'))",
                 'the page to ask for a token', page_error_ok=True)
        cdp.eval("document.querySelector('details.token').open = true")
        x, y = cdp.center('#token')
        cdp.mouse('mousePressed', x, y, 'left', 1)
        cdp.mouse('mouseReleased', x, y, 'left', 1)
        cdp.send('Input.insertText', {'text': secret})
        for kind in ('rawKeyDown', 'char', 'keyUp'):
            cdp.send('Input.dispatchKeyEvent', {'type': kind, 'key': 'Enter', 'code': 'Enter',
                                                'windowsVirtualKeyCode': 13, 'text': '\r'})
        cdp.wait("document.querySelectorAll('#results .card').length > 0 && "
                 "[...document.querySelectorAll('#results img.thumb')].slice(0, 4)"
                 ".every(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0)",
                 'results and images with the token', IMAGE_WAIT)
        check(cdp.eval("sessionStorage.getItem('cmrsearch.token')") == secret, 'the token is not in sessionStorage')
        check(secret not in cdp.eval("location.href"), 'the token leaked into the URL')
        log('token: refused without it, results and images with it')
        stop(server, 60)
        check_server_log(server, server.log_path)
        log('PASS')
        return 0
    except Fail as e:
        log('FAIL: %s' % e)
        return 1
    finally:
        stop(browser)
        stop(server)
        if a.keep:
            log('kept %s' % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
            log('removed %s' % work)


if __name__ == '__main__':
    sys.exit(main())
