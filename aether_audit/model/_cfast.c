/* _cfast: the two per-message loops of a whole-stream read, in C.
 *
 * A load spends its time in two loops that touch every message: parsing
 * the MSG/HMSG frames of the socket buffer (_scan.py) and decoding the Go
 * store's JSON (_fastdecode.py). In Python they cost ~2.2 and ~3.3 us per
 * message on this project's 2-core machine, which kept load() at 0.6-0.8 of
 * the Go client's drain; here they cost a small fraction of that.
 *
 * A third loop is the export's: its per-actor hash chain (chain_hashes),
 * one canonical JSON text and one SHA-256 per event, ~2.5 us an event in
 * Python.
 *
 * Each function has a pure-Python twin with the same contract, documented
 * once, on the twin (_scan._deliveries, _fastdecode.go_events,
 * export.chain._chain_hashes); the tests run the same cases against both
 * (tests/test_decode.py, tests/test_scan_parse.py, tests/export/test_chain.py).
 * The module is optional: setup.py builds it where a C compiler is present,
 * and without it the twins run.
 *
 * Like the Python fast path, go_events never judges a message: it takes
 * only what it can prove the exact decoder (_wire.decode_event) decodes to
 * the same fields, and leaves everything else to it. Its proof is
 * conservative by design: a JSON text is taken only when it is already in
 * orjson's canonical form (compact, no escapes, no duplicate keys, numbers
 * that re-encode to the same digits), so the raw bytes *are* the exact
 * decoder's `data` text.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* ---- JSON, in orjson's canonical form only ---------------------------- */

#define MAX_DEPTH 64   /* deeper data goes to the exact decoder */
#define MAX_KEYS 64    /* keys per object checked for duplicates */

typedef struct {
    const unsigned char *p, *end;
    int ascii;  /* only ASCII seen in the last string */
} cursor;

/* A string whose bytes are its value: no backslash, no control character,
 * valid UTF-8 without surrogates. orjson writes such a value back as the
 * same bytes (it escapes only '"', '\\' and characters below U+0020). */
static int string_token(cursor *c, const unsigned char **start, Py_ssize_t *len) {
    const unsigned char *p = c->p, *end = c->end;
    if (p >= end || *p != '"') return 0;
    p++;
    *start = p;
    c->ascii = 1;
    while (p < end) {
        unsigned char b = *p;
        if (b == '"') {
            *len = p - *start;
            c->p = p + 1;
            return 1;
        }
        if (b < 0x20 || b == '\\') return 0;
        if (b < 0x80) { p++; continue; }
        c->ascii = 0;
        if (b >= 0xC2 && b <= 0xDF) {
            if (end - p < 2 || (p[1] & 0xC0) != 0x80) return 0;
            p += 2;
        } else if (b >= 0xE0 && b <= 0xEF) {
            if (end - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
            if (b == 0xE0 && p[1] < 0xA0) return 0;  /* overlong */
            if (b == 0xED && p[1] >= 0xA0) return 0; /* surrogate */
            p += 3;
        } else if (b >= 0xF0 && b <= 0xF4) {
            if (end - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
            if (b == 0xF0 && p[1] < 0x90) return 0;  /* overlong */
            if (b == 0xF4 && p[1] >= 0x90) return 0; /* beyond U+10FFFF */
            p += 4;
        } else {
            return 0;
        }
    }
    return 0;
}

static int digits(const unsigned char **p, const unsigned char *end) {
    int n = 0;
    while (*p < end && **p >= '0' && **p <= '9') { (*p)++; n++; }
    return n;
}

/* The value of the digits d..end (at most 19 of them: no overflow). */
static unsigned long long magnitude(const unsigned char *d, const unsigned char *end) {
    unsigned long long n = 0;
    for (; d < end; d++) n = n * 10 + (unsigned long long)(*d - '0');
    return n;
}

/* A number that orjson writes back as the same digits:
 * - an integer -?(0|[1-9][0-9]*), not "-0" (orjson reads it as 0 and
 *   writes "0"), of 64 bits, signed or not (orjson keeps those as they
 *   are), at most 19 digits;
 * - a decimal without exponent, its last digit not 0, at most 15
 *   significant digits (so it is the shortest text of its double: two
 *   decimals of <= 15 digits never share a double) and between 1e-4 and
 *   1e15, where orjson writes fixed notation (it uses exponents below 1e-5
 *   and from 1e16 on).
 * Anything else (exponents, "1.0", long or tiny decimals) is not proven. */
static int number_token(cursor *c) {
    const unsigned char *p = c->p, *end = c->end;
    int negative = 0, whole = 0, fraction = 0, zeros = 0;
    if (p < end && *p == '-') { negative = 1; p++; }
    if (p >= end) return 0;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        whole = digits(&p, end);
    } else {
        return 0;
    }
    if (p < end && (*p == 'e' || *p == 'E')) return 0;
    if (p < end && *p == '.') {
        const unsigned char *first = ++p;
        fraction = digits(&p, end);
        if (fraction == 0 || p[-1] == '0') return 0;
        if (p < end && (*p == 'e' || *p == 'E')) return 0;
        if (whole == 0) {
            while (first < p && *first == '0') { first++; zeros++; }
            if (zeros > 3 || fraction - zeros > 15) return 0;
        } else if (whole + fraction > 15) {
            return 0;
        }
    } else if (whole > 19 || (negative && whole == 0)) {
        return 0;
    } else if (negative && whole == 19 && magnitude(c->p + 1, p) > 9223372036854775808ULL) {
        return 0;  /* beyond -2**63 orjson reads a float */
    }
    c->p = p;
    return 1;
}

static int literal(cursor *c, const char *word, Py_ssize_t n) {
    if (c->end - c->p < n || memcmp(c->p, word, n) != 0) return 0;
    c->p += n;
    return 1;
}

static int value(cursor *c, int depth);

/* After a member or element: 1 when another follows (the ',' is taken),
 * 2 when `close` ends the container (taken too), 0 otherwise. */
static int next_item(cursor *c, unsigned char close) {
    if (c->p >= c->end) return 0;
    if (*c->p == close) { c->p++; return 2; }
    if (*c->p != ',') return 0;
    c->p++;
    return 1;
}

static int object_token(cursor *c, int depth) {
    const unsigned char *keys[MAX_KEYS];
    Py_ssize_t sizes[MAX_KEYS];
    int count = 0;
    c->p++;  /* '{' */
    if (c->p < c->end && *c->p == '}') { c->p++; return 1; }
    for (;;) {
        const unsigned char *key;
        Py_ssize_t size;
        if (count == MAX_KEYS || !string_token(c, &key, &size)) return 0;
        for (int i = 0; i < count; i++) {  /* orjson keeps the last of duplicates */
            if (sizes[i] == size && memcmp(keys[i], key, size) == 0) return 0;
        }
        keys[count] = key;
        sizes[count++] = size;
        if (c->p >= c->end || *c->p != ':') return 0;
        c->p++;
        if (!value(c, depth + 1)) return 0;
        int next = next_item(c, '}');
        if (next != 1) return next == 2;
    }
}

static int array_token(cursor *c, int depth) {
    c->p++;  /* '[' */
    if (c->p < c->end && *c->p == ']') { c->p++; return 1; }
    for (;;) {
        if (!value(c, depth + 1)) return 0;
        int next = next_item(c, ']');
        if (next != 1) return next == 2;
    }
}

static int value(cursor *c, int depth) {
    const unsigned char *ignored;
    Py_ssize_t size;
    if (depth > MAX_DEPTH || c->p >= c->end) return 0;
    switch (*c->p) {
        case '{': return object_token(c, depth);
        case '[': return array_token(c, depth);
        case '"': return string_token(c, &ignored, &size);
        case 't': return literal(c, "true", 4);
        case 'f': return literal(c, "false", 5);
        case 'n': return literal(c, "null", 4);
        default: return number_token(c);
    }
}

/* ---- the envelope: aether.Event as json.Marshal writes it ---------------- */

static int two(const unsigned char *p, int low, int high) {
    if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9') return 0;
    int n = (p[0] - '0') * 10 + (p[1] - '0');
    return n >= low && n <= high;
}

/* _fastdecode._TIMESTAMP: RFC 3339 as Go's time.RFC3339Nano writes it, every
 * calendar check but 29 February, offsets up to 23:59 (the exact decoder
 * judges the rest: 30 February, hour 24, +24:00, +25:00). */
static int go_timestamp(const unsigned char *s, Py_ssize_t n) {
    static const char longs[] = {1, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1};
    if (n < 20) return 0;
    for (int i = 0; i < 4; i++) if (s[i] < '0' || s[i] > '9') return 0;
    if (s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':') return 0;
    if (!two(s + 5, 1, 12) || !two(s + 8, 1, 31)) return 0;
    int month = (s[5] - '0') * 10 + (s[6] - '0'), day = (s[8] - '0') * 10 + (s[9] - '0');
    if (day >= 29 && month == 2) return 0;
    if (day == 31 && !longs[month - 1]) return 0;
    if (!two(s + 11, 0, 23) || !two(s + 14, 0, 59) || !two(s + 17, 0, 59)) return 0;
    Py_ssize_t i = 19;
    if (s[i] == '.') {
        Py_ssize_t first = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        if (i == first || i - first > 9) return 0;
    }
    if (i < n && s[i] == 'Z') return i + 1 == n;
    if (i < n && (s[i] == '+' || s[i] == '-') && n - i == 6) {
        return two(s + i + 1, 0, 23) && s[i + 3] == ':' && two(s + i + 4, 0, 59);
    }
    return 0;
}

static int key(cursor *c, const char *text) {
    return literal(c, text, (Py_ssize_t)strlen(text));
}

typedef struct {
    const unsigned char *id, *type, *actor, *command, *data, *stamp;
    Py_ssize_t id_n, type_n, actor_n, command_n, data_n, stamp_n;
    int id_ascii, type_ascii, actor_ascii;
    long long version;
} go_event;

/* The fields of a payload in the Go layout, or 0. */
static int parse_event(const unsigned char *p, Py_ssize_t n, go_event *e) {
    cursor c = {p, p + n, 1};
    if (!key(&c, "{\"id\":") || !string_token(&c, &e->id, &e->id_n)) return 0;
    e->id_ascii = c.ascii;
    if (!key(&c, ",\"eventType\":") || !string_token(&c, &e->type, &e->type_n)) return 0;
    e->type_ascii = c.ascii;
    if (!key(&c, ",\"actorId\":") || !string_token(&c, &e->actor, &e->actor_n)) return 0;
    e->actor_ascii = c.ascii;
    e->command = NULL;
    if (key(&c, ",\"commandId\":")) {
        const unsigned char *before = c.p;
        if (!string_token(&c, &e->command, &e->command_n)) return 0;
        e->command = before;  /* the whole token, quotes included */
        e->command_n = c.p - before;
    }
    if (!key(&c, ",\"version\":")) return 0;
    /* int64, as Go's field: -?(0|[1-9][0-9]*) ("-0" reads as 0 in both) */
    const unsigned char *v = c.p;
    int negative = v < c.end && *v == '-';
    if (negative) v++;
    const unsigned char *first = v;
    int count = digits(&v, c.end);
    if (count == 0 || count > 19 || (count > 1 && *first == '0')) return 0;
    unsigned long long version = magnitude(first, v);
    if (version > 9223372036854775807ULL + (unsigned long long)negative) return 0;
    e->version = negative ? (long long)(0ULL - version) : (long long)version;
    c.p = v;
    if (!key(&c, ",\"data\":")) return 0;
    e->data = c.p;
    if (literal(&c, "null", 4)) {
        e->data = NULL;
    } else {
        if (c.p >= c.end || *c.p != '{' || !object_token(&c, 1)) return 0;
        e->data_n = c.p - e->data;
    }
    if (!key(&c, ",\"timestamp\":") || !string_token(&c, &e->stamp, &e->stamp_n)) return 0;
    if (!go_timestamp(e->stamp, e->stamp_n)) return 0;
    return c.p + 1 == c.end && *c.p == '}';
}

static PyObject *text(const unsigned char *p, Py_ssize_t n, int ascii) {
    if (ascii) {
        PyObject *s = PyUnicode_New(n, 127);
        if (s != NULL) memcpy(PyUnicode_DATA(s), p, n);
        return s;
    }
    return PyUnicode_DecodeUTF8((const char *)p, n, NULL);
}

static int append_new(PyObject *list, PyObject *item) {
    if (item == NULL) return -1;
    int failed = PyList_Append(list, item);
    Py_DECREF(item);
    return failed;
}

/* go_events(subjects, payloads, snapshot_prefix) -> (columns, todo); see _fastdecode.go_events. */
static PyObject *go_events(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_Check(args[0]) || !PyList_Check(args[1]) || !PyUnicode_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "go_events(subjects: list, payloads: list, snapshot_prefix: str)");
        return NULL;
    }
    PyObject *subjects = args[0], *payloads = args[1], *prefix = args[2];
    Py_ssize_t n = PyList_GET_SIZE(payloads);
    if (PyList_GET_SIZE(subjects) != n) {
        PyErr_SetString(PyExc_ValueError, "subjects and payloads differ in length");
        return NULL;
    }
    PyObject *columns[7] = {NULL}, *todo = PyList_New(0);
    if (todo == NULL) return NULL;
    for (int k = 0; k < 7; k++) {
        if ((columns[k] = PyList_New(n)) == NULL) goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *subject = PyList_GET_ITEM(subjects, i), *payload = PyList_GET_ITEM(payloads, i);
        go_event e;
        PyObject *fields[7] = {NULL};
        int proven = PyBytes_Check(payload) && PyUnicode_Check(subject);
        if (proven) {
            Py_ssize_t tail = PyUnicode_Tailmatch(subject, prefix, 0, PY_SSIZE_T_MAX, -1);
            if (tail < 0) goto done;
            proven = !tail && parse_event((const unsigned char *)PyBytes_AS_STRING(payload),
                                          PyBytes_GET_SIZE(payload), &e);
        }
        if (proven) {
            static const unsigned char zero[] = "0001-01-01T00:00:00Z";
            fields[0] = text(e.id, e.id_n, e.id_ascii);
            fields[1] = text(e.type, e.type_n, e.type_ascii);
            fields[2] = text(e.actor, e.actor_n, e.actor_ascii);
            fields[3] = PyLong_FromLongLong(e.version);
            if (e.data == NULL) {
                fields[4] = Py_NewRef(Py_None);
            } else {  /* bytes: Arrow takes UTF-8 bytes as text, and a copy of bytes is cheapest */
                fields[4] = PyBytes_FromStringAndSize((const char *)e.data, e.data_n);
            }
            if (e.stamp_n == 20 && memcmp(e.stamp, zero, 20) == 0) {
                fields[5] = Py_NewRef(Py_None);  /* Go's zero time: no timestamp */
            } else {
                fields[5] = text(e.stamp, e.stamp_n, 1);
            }
            if (e.command == NULL) {
                fields[6] = Py_NewRef(Py_None);
            } else {  /* orjson.dumps({"commandId": value}): the token as it stands */
                PyObject *token = PyUnicode_DecodeUTF8((const char *)e.command, e.command_n, NULL);
                fields[6] = token == NULL ? NULL : PyUnicode_FromFormat("{\"commandId\":%U}", token);
                Py_XDECREF(token);
            }
            for (int k = 0; k < 7; k++) {
                if (fields[k] == NULL) {
                    for (int j = 0; j < 7; j++) Py_XDECREF(fields[j]);
                    goto done;
                }
                PyList_SET_ITEM(columns[k], i, fields[k]);
            }
        } else {
            for (int k = 0; k < 7; k++) PyList_SET_ITEM(columns[k], i, Py_NewRef(Py_None));
            if (append_new(todo, PyLong_FromSsize_t(i)) < 0) goto done;
        }
    }
    return Py_BuildValue("(NNNNNNN)N", columns[0], columns[1], columns[2], columns[3], columns[4],
                         columns[5], columns[6], todo);
done:
    for (int k = 0; k < 7; k++) Py_XDECREF(columns[k]);
    Py_DECREF(todo);
    return NULL;
}

/* ---- deliveries: the MSG/HMSG frames of one consumer ---------------------- */

/* Digits as an int64; 0 when there are none, or too many (the Python parser's then). */
static int number(const unsigned char **p, const unsigned char *end, long long *out) {
    const unsigned char *first = *p;
    unsigned long long n = 0;
    while (*p < end && **p >= '0' && **p <= '9') {
        if (*p - first >= 19) return 0;
        n = n * 10 + (unsigned long long)(**p - '0');
        (*p)++;
    }
    if (n > 9223372036854775807ULL) return 0;
    *out = (long long)n;
    return *p > first;
}

/* Whether the n bytes at p hold the 11 bytes "Nats-Batch-" (an atomic batch
 * member's header block, ~30-100 bytes: a memchr per 'N' is enough). */
static int batch_header(const unsigned char *p, Py_ssize_t n) {
    static const char name[] = "Nats-Batch-";
    const Py_ssize_t m = sizeof(name) - 1;
    const unsigned char *end = p + n;
    while (end - p >= m) {
        const unsigned char *at = memchr(p, 'N', (size_t)(end - p - m + 1));
        if (at == NULL) return 0;
        if (memcmp(at, name, (size_t)m) == 0) return 1;
        p = at + 1;
    }
    return 0;
}

/* deliveries(buf, pos, sid, prefix, limit, end_seq, seqs, stamps, subjects, payloads) -> (pos, done);
 * see _scan._deliveries. */
static PyObject *deliveries(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 10 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[2]) || !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "deliveries(buf, pos, sid, prefix, limit, end_seq, seqs, stamps, subjects, payloads)");
        return NULL;
    }
    PyObject *buffer = args[0], *lists[4] = {args[6], args[7], args[8], args[9]};
    for (int k = 0; k < 4; k++) {
        if (!PyList_Check(lists[k])) {
            PyErr_SetString(PyExc_TypeError, "deliveries appends to lists");
            return NULL;
        }
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]), limit = PyLong_AsSsize_t(args[4]);
    long long last = PyLong_AsLongLong(args[5]);
    if (PyErr_Occurred()) return NULL;
    const unsigned char *base = (const unsigned char *)PyBytes_AS_STRING(buffer);
    const unsigned char *end = base + PyBytes_GET_SIZE(buffer);
    const unsigned char *sid = (const unsigned char *)PyBytes_AS_STRING(args[2]);
    const unsigned char *prefix = (const unsigned char *)PyBytes_AS_STRING(args[3]);
    Py_ssize_t sid_n = PyBytes_GET_SIZE(args[2]), prefix_n = PyBytes_GET_SIZE(args[3]);
    int done = 0;
    for (Py_ssize_t taken = 0; taken < limit; taken++) {
        /* H?MSG <subject [!-~]+> <sid> <prefix>\d+.(seq).\d+.(ns).(pending)(.[^ ]*)? (hlen )?(size)\r\n */
        const unsigned char *p = base + pos, *subject;
        long long seq, ns, pending, first, size, hlen = 0;
        if (p < end && *p == 'H') p++;
        if (end - p < 4 || memcmp(p, "MSG ", 4) != 0) break;
        p += 4;
        subject = p;
        while (p < end && *p >= '!' && *p <= '~') p++;
        Py_ssize_t subject_n = p - subject;
        if (subject_n == 0 || p >= end || *p != ' ') break;
        p++;
        if (end - p < sid_n + 1 + prefix_n || memcmp(p, sid, sid_n) != 0 || p[sid_n] != ' ') break;
        p += sid_n + 1;
        if (memcmp(p, prefix, prefix_n) != 0) break;
        p += prefix_n;
        if (!digits(&p, end) || p >= end || *p++ != '.') break;
        if (!number(&p, end, &seq) || p >= end || *p++ != '.') break;
        if (!digits(&p, end) || p >= end || *p++ != '.') break;
        if (!number(&p, end, &ns) || p >= end || *p++ != '.') break;
        const unsigned char *pending_at = p;
        if (!number(&p, end, &pending)) break;
        int pending_zero = p - pending_at == 1 && *pending_at == '0';
        if (p < end && *p == '.') {
            while (p < end && *p != ' ') p++;
        }
        if (p >= end || *p++ != ' ') break;
        if (!number(&p, end, &first)) break;
        size = first;
        if (p < end && *p == ' ') {
            p++;
            hlen = first;
            if (!number(&p, end, &size)) break;
        }
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') break;
        p += 2;
        if (size > end - p - 2) break;  /* the payload is not all here yet */
        /* An atomic batch member: declined, the general parser keeps its header. */
        if (hlen > 0 && batch_header(p, hlen < size ? hlen : size)) break;
        if (seq > last) { done = 1; break; }
        const unsigned char *body = p + (hlen < size ? hlen : size);
        PyObject *items[4] = {
            PyLong_FromLongLong(seq), PyLong_FromLongLong(ns),
            PyUnicode_DecodeASCII((const char *)subject, subject_n, NULL),
            PyBytes_FromStringAndSize((const char *)body, p + size - body),
        };
        for (int k = 0; k < 4; k++) {
            if (items[k] == NULL || PyList_Append(lists[k], items[k]) < 0) {
                for (int j = 0; j < 4; j++) Py_XDECREF(items[j]);
                return NULL;
            }
        }
        for (int k = 0; k < 4; k++) Py_DECREF(items[k]);
        pos = (p + size + 2) - base;
        if (seq == last || pending_zero) { done = 1; break; }
    }
    return Py_BuildValue("(nO)", pos, done ? Py_True : Py_False);
}

/* ---- the export's hash chain: export.chain.chain_hashes ------------------ */

/* SHA-256 (FIPS 180-4), written for this file: a portable C compression
 * and, on x86-64 CPUs with the SHA extensions (checked once with CPUID),
 * one with them. Not OpenSSL's: its headers (libssl-dev) are not on a clean
 * Debian machine with only python3 and gcc, where this module must still
 * build. The portable one costs ~12 cycles a byte, the SHA-NI one ~2; a
 * chain row is ~430 bytes, so 200,000 rows hash in ~0.35 s or ~0.06 s
 * (the Python twin: ~0.5 s of which ~0.3 s is orjson/hashlib calls and
 * objects). tests/model/test_chain.py checks both against hashlib. */

#include <stdint.h>

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha_blocks_portable(uint32_t state[8], const unsigned char *p, size_t blocks) {
    for (; blocks; blocks--, p += 64) {
        uint32_t w[64], a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int i = 0; i < 16; i++) {
            w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
        }
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + sha_k[i] + w[i];
            uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
        }
        state[0] += a; state[1] += b; state[2] += c; state[3] += d;
        state[4] += e; state[5] += f; state[6] += g; state[7] += h;
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHA_NI 1

/* The SHA extensions' schedule: four rounds per step, two per sha256rnds2,
 * the state kept as ABEF/CDGH, the next message words made by msg1/msg2. */
__attribute__((target("sha,sse4.1,ssse3")))
static void sha_blocks_ni(uint32_t state[8], const unsigned char *p, size_t blocks) {
    const __m128i order = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&state[0]), 0xB1);  /* CDAB */
    __m128i state1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&state[4]), 0x1B);  /* EFGH */
    __m128i state0 = _mm_alignr_epi8(tmp, state1, 8);  /* ABEF */
    state1 = _mm_blend_epi16(state1, tmp, 0xF0);  /* CDGH */
    for (; blocks; blocks--, p += 64) {
        __m128i abef = state0, cdgh = state1, m[4];
        for (int i = 0; i < 4; i++) {
            m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), order);
        }
#if defined(__clang__)
#pragma unroll
#else
#pragma GCC unroll 16  /* m[] in registers: 1.9x the speed of the rolled loop */
#endif
        for (int r = 0; r < 16; r++) {
            __m128i cur = m[r & 3];
            __m128i msg = _mm_add_epi32(cur, _mm_loadu_si128((const __m128i *)&sha_k[4 * r]));
            state1 = _mm_sha256rnds2_epu32(state1, state0, msg);
            if (r >= 3 && r <= 14) {  /* the words of step r + 1 */
                __m128i next = _mm_add_epi32(m[(r + 1) & 3], _mm_alignr_epi8(cur, m[(r + 3) & 3], 4));
                m[(r + 1) & 3] = _mm_sha256msg2_epu32(next, cur);
            }
            state0 = _mm_sha256rnds2_epu32(state0, state1, _mm_shuffle_epi32(msg, 0x0E));
            if (r >= 1 && r <= 12) m[(r + 3) & 3] = _mm_sha256msg1_epu32(m[(r + 3) & 3], cur);
        }
        state0 = _mm_add_epi32(state0, abef);
        state1 = _mm_add_epi32(state1, cdgh);
    }
    tmp = _mm_shuffle_epi32(state0, 0x1B);  /* FEBA */
    state1 = _mm_shuffle_epi32(state1, 0xB1);  /* DCHG */
    _mm_storeu_si128((__m128i *)&state[0], _mm_blend_epi16(tmp, state1, 0xF0));  /* DCBA */
    _mm_storeu_si128((__m128i *)&state[4], _mm_alignr_epi8(state1, tmp, 8));  /* HGFE */
}

static int cpu_has_sha(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 19)) || !(c & (1u << 9))) return 0;  /* SSE4.1, SSSE3 */
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 29) & 1;
}
#else
#define HAVE_SHA_NI 0
#endif

typedef void (*sha_blocks_fn)(uint32_t state[8], const unsigned char *p, size_t blocks);
static sha_blocks_fn sha_blocks = sha_blocks_portable;

/* SHA-256 of msg[0:n], as 64 lowercase hex digits at hex. msg must have 72
 * bytes of room after n: the padding is written there. */
static void sha256_hex(unsigned char *msg, size_t n, sha_blocks_fn blocks, unsigned char *hex) {
    static const char digits16[] = "0123456789abcdef";
    uint32_t state[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    size_t padded = (n + 9 + 63) & ~(size_t)63;
    uint64_t bits = (uint64_t)n * 8;
    msg[n] = 0x80;
    memset(msg + n + 1, 0, padded - n - 1);
    for (int i = 0; i < 8; i++) msg[padded - 1 - i] = (unsigned char)(bits >> (8 * i));
    blocks(state, msg, padded / 64);
    for (int i = 0; i < 8; i++) {
        for (int j = 0; j < 8; j++) hex[8 * i + j] = digits16[(state[i] >> (28 - 4 * j)) & 15];
    }
}

/* One Arrow array of the row's eight values: int64 or string (int32
 * offsets), with its validity bitmap (NULL: no nulls) and array offset. */
typedef struct {
    Py_buffer valid, values, data;  /* data: a string array's bytes */
    int has_valid, has_data;
    Py_ssize_t offset;
} column;

static int column_null(const column *c, Py_ssize_t i) {
    Py_ssize_t at = c->offset + i;
    return c->has_valid && !((((const unsigned char *)c->valid.buf)[at >> 3] >> (at & 7)) & 1);
}

static long long column_int(const column *c, Py_ssize_t i) {
    long long v;
    memcpy(&v, (const char *)c->values.buf + 8 * (c->offset + i), 8);
    return v;
}

/* A string value's bytes, or 0 when its offsets are out of bounds. */
static int column_text(const column *c, Py_ssize_t i, const unsigned char **p, Py_ssize_t *n) {
    int32_t bounds[2];
    memcpy(bounds, (const char *)c->values.buf + 4 * (c->offset + i), 8);
    if (bounds[0] < 0 || bounds[1] < bounds[0] || bounds[1] > c->data.len) return 0;
    *p = (const unsigned char *)c->data.buf + bounds[0];
    *n = bounds[1] - bounds[0];
    return 1;
}

/* The value as orjson writes a str: '"', '\\' and characters below U+0020
 * escaped (\b \t \n \f \r, else \u00xx), the rest as its UTF-8. 0 when the
 * bytes are not valid UTF-8 (Python would not decode them: declined). */
static unsigned char *json_string(unsigned char *out, const unsigned char *p, Py_ssize_t n) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *end = p + n;
    *out++ = '"';
    while (p < end) {
        unsigned char b = *p;
        if (b >= 0x20 && b < 0x80 && b != '"' && b != '\\') { *out++ = b; p++; continue; }
        if (b < 0x80) {
            *out++ = '\\';
            switch (b) {
                case '"': *out++ = '"'; break;
                case '\\': *out++ = '\\'; break;
                case '\b': *out++ = 'b'; break;
                case '\t': *out++ = 't'; break;
                case '\n': *out++ = 'n'; break;
                case '\f': *out++ = 'f'; break;
                case '\r': *out++ = 'r'; break;
                default: memcpy(out, "u00", 3); out[3] = hex[b >> 4]; out[4] = hex[b & 15]; out += 5;
            }
            p++;
            continue;
        }
        Py_ssize_t size;
        if (b >= 0xC2 && b <= 0xDF) {
            if (end - p < 2 || (p[1] & 0xC0) != 0x80) return NULL;
            size = 2;
        } else if (b >= 0xE0 && b <= 0xEF) {
            if (end - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return NULL;
            if (b == 0xE0 && p[1] < 0xA0) return NULL;  /* overlong */
            if (b == 0xED && p[1] >= 0xA0) return NULL; /* surrogate */
            size = 3;
        } else if (b >= 0xF0 && b <= 0xF4) {
            if (end - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return NULL;
            if (b == 0xF0 && p[1] < 0x90) return NULL;  /* overlong */
            if (b == 0xF4 && p[1] >= 0x90) return NULL; /* beyond U+10FFFF */
            size = 4;
        } else {
            return NULL;
        }
        memcpy(out, p, (size_t)size);
        out += size;
        p += size;
    }
    *out++ = '"';
    return out;
}

static unsigned char *json_int(unsigned char *out, long long v) {
    char digits[24];
    int n = 0;
    unsigned long long m = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do { digits[n++] = (char)('0' + m % 10); m /= 10; } while (m);
    if (v < 0) *out++ = '-';
    while (n) *out++ = (unsigned char)digits[--n];
    return out;
}

/* An actor's chain so far: the last hash (hex, or none yet), its stream
 * sequence and how many events it has. */
typedef struct {
    const unsigned char *id;
    Py_ssize_t id_n;
    PyObject *key;  /* the actor as str, for heads */
    unsigned char hex[64];
    int has_hex;
    long long seq, count;
} actor_state;

#define CHAIN_COLUMNS 8
/* Which of the row's values are text: [stream_seq, actor_id, version,
 * event_type, event_id, timestamp ns, data, extra]. */
static const int chain_text[CHAIN_COLUMNS] = {0, 1, 0, 1, 1, 0, 1, 1};

static void release_columns(column *cols, int count) {
    for (int k = 0; k < count; k++) {
        if (cols[k].has_valid) PyBuffer_Release(&cols[k].valid);
        PyBuffer_Release(&cols[k].values);
        if (cols[k].has_data) PyBuffer_Release(&cols[k].data);
    }
}

/* Open column k's (offset, validity, values[, data]) buffers and check
 * they hold n rows; 0 (no exception) when they do not: declined. */
static int open_column(PyObject *spec, int k, Py_ssize_t n, column *c) {
    memset(c, 0, sizeof(*c));
    Py_ssize_t parts = chain_text[k] ? 4 : 3;
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != parts) return 0;
    c->offset = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 0));
    if (c->offset < 0) { PyErr_Clear(); return 0; }
    PyObject *valid = PyTuple_GET_ITEM(spec, 1);
    if (valid != Py_None) {
        if (PyObject_GetBuffer(valid, &c->valid, PyBUF_SIMPLE) < 0) { PyErr_Clear(); return 0; }
        c->has_valid = 1;
    }
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(spec, 2), &c->values, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        if (c->has_valid) PyBuffer_Release(&c->valid);
        return 0;
    }
    if (chain_text[k]) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(spec, 3), &c->data, PyBUF_SIMPLE) < 0) {
            PyErr_Clear();
            release_columns(c, 1);
            return 0;
        }
        c->has_data = 1;
    }
    Py_ssize_t rows = c->offset + n;
    if ((c->has_valid && c->valid.len < (rows + 7) / 8)
        || c->values.len < (chain_text[k] ? 4 * (rows + 1) : 8 * rows)) {
        release_columns(c, 1);
        return 0;
    }
    return 1;
}

static Py_hash_t bytes_hash(const unsigned char *p, Py_ssize_t n) {
    uint64_t h = 1469598103934665603ULL;  /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return (Py_hash_t)(h >> 1);
}

/* The actor's earlier chain from heads (absent: none), or 0 when its value is
 * not what the twin reads as (str of 0 or 64 ASCII characters, any, int
 * below 2**63 - 1): declined, the twin judges it. -1 on an error. */
static int head_of(PyObject *heads, actor_state *s) {
    PyObject *value = PyDict_GetItemWithError(heads, s->key);
    if (value == NULL) return PyErr_Occurred() ? -1 : 1;
    if (!PyTuple_Check(value) || PyTuple_GET_SIZE(value) != 3) return 0;
    PyObject *hash = PyTuple_GET_ITEM(value, 0), *count = PyTuple_GET_ITEM(value, 2);
    if (!PyUnicode_Check(hash) || !PyLong_CheckExact(count)) return 0;
    if (PyUnicode_GET_LENGTH(hash) == 64 && PyUnicode_IS_ASCII(hash)) {
        memcpy(s->hex, PyUnicode_DATA(hash), 64);
        s->has_hex = 1;
    } else if (PyUnicode_GET_LENGTH(hash) != 0) {
        return 0;
    }
    int overflow;
    s->count = PyLong_AsLongLongAndOverflow(count, &overflow);
    if (s->count == -1 && PyErr_Occurred()) return -1;
    return !overflow && s->count < 0x7fffffffffffffffLL;
}

/* chain_hashes(rows, columns, heads) -> bytes | None; see export.chain.chain_hashes. */
static PyObject *chain_hashes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyLong_Check(args[0]) || !PyTuple_Check(args[1]) || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "chain_hashes(rows: int, columns: tuple, heads: dict)");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[0]);
    if (n < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "rows must be >= 0");
        return NULL;
    }
    if (PyTuple_GET_SIZE(args[1]) != CHAIN_COLUMNS) {
        PyErr_SetString(PyExc_ValueError, "chain_hashes takes 8 columns");
        return NULL;
    }
    PyObject *heads = args[2], *result = NULL;
    column cols[CHAIN_COLUMNS];
    int opened = 0;
    for (; opened < CHAIN_COLUMNS; opened++) {
        if (!open_column(PyTuple_GET_ITEM(args[1], opened), opened, n, &cols[opened])) {
            release_columns(cols, opened);
            Py_RETURN_NONE;
        }
    }
    /* stream_seq and actor_id null: the twin keys heads by None; declined. */
    int declined = 0;
    for (Py_ssize_t i = 0; i < n && !declined; i++) declined = column_null(&cols[0], i) || column_null(&cols[1], i);
    if (declined) {
        release_columns(cols, CHAIN_COLUMNS);
        Py_RETURN_NONE;
    }
    /* Pass 1 (GIL held): each row's actor, by its bytes, in an open-addressed
     * table; an actor's earlier chain is read from heads once per call. */
    Py_ssize_t size = 16, actors = 0;
    while (size < 2 * n) size *= 2;
    Py_ssize_t *table = PyMem_Malloc(size * sizeof(Py_ssize_t));
    Py_ssize_t *slot = PyMem_Malloc((n ? n : 1) * sizeof(Py_ssize_t));
    actor_state *states = PyMem_Malloc((n ? n : 1) * sizeof(actor_state));
    PyObject *out = PyBytes_FromStringAndSize(NULL, 64 * n);
    unsigned char *msg = NULL;
    if (table == NULL || slot == NULL || states == NULL || out == NULL) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t t = 0; t < size; t++) table[t] = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *id;
        Py_ssize_t id_n;
        if (!column_text(&cols[1], i, &id, &id_n)) { declined = 1; break; }
        Py_ssize_t t = bytes_hash(id, id_n) & (size - 1);
        while (table[t] >= 0) {
            actor_state *s = &states[table[t]];
            if (s->id_n == id_n && memcmp(s->id, id, (size_t)id_n) == 0) break;
            t = (t + 1) & (size - 1);
        }
        if (table[t] < 0) {
            actor_state *s = &states[actors];
            s->id = id;
            s->id_n = id_n;
            s->has_hex = 0;
            s->count = 0;
            s->key = PyUnicode_DecodeUTF8((const char *)id, id_n, NULL);
            if (s->key == NULL) {  /* not UTF-8: the twin's to_pylist judges it */
                PyErr_Clear();
                declined = 1;
                break;
            }
            table[t] = actors++;
            int read = head_of(heads, s);
            if (read <= 0) {
                declined = !read;
                if (read < 0) goto done;
                break;
            }
        }
        slot[i] = table[t];
    }
    /* Pass 2 (GIL released: the buffers are immutable and ours until
     * released): each row's canonical bytes, hashed, in stream order. */
    if (!declined) {
        Py_ssize_t room = 0;
        unsigned char *hexes = (unsigned char *)PyBytes_AS_STRING(out);
        sha_blocks_fn blocks = sha_blocks;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n && !declined; i++) {
            const unsigned char *text[CHAIN_COLUMNS];
            Py_ssize_t text_n[CHAIN_COLUMNS], need = 64 + 2 + 8 * 24 + 72;
            for (int k = 0; k < CHAIN_COLUMNS; k++) {
                text[k] = NULL;
                if (chain_text[k] && !column_null(&cols[k], i)) {
                    if (!column_text(&cols[k], i, &text[k], &text_n[k])) { declined = 1; break; }
                    need += 6 * text_n[k] + 8;  /* every byte escaped as \u00xx at worst */
                }
            }
            if (declined) break;
            if (need > room) {
                unsigned char *grown = PyMem_RawRealloc(msg, (size_t)need * 2);
                if (grown == NULL) { declined = -1; break; }
                msg = grown;
                room = need * 2;
            }
            actor_state *s = &states[slot[i]];
            unsigned char *p = msg;
            if (s->has_hex) { memcpy(p, s->hex, 64); p += 64; }
            *p++ = '\n';
            *p++ = '[';
            for (int k = 0; k < CHAIN_COLUMNS && p != NULL; k++) {
                if (k) *p++ = ',';
                if (column_null(&cols[k], i)) {
                    memcpy(p, "null", 4);
                    p += 4;
                } else if (chain_text[k]) {
                    p = json_string(p, text[k], text_n[k]);
                } else {
                    p = json_int(p, column_int(&cols[k], i));
                }
            }
            if (p == NULL) { declined = 1; break; }
            *p++ = ']';
            sha256_hex(msg, (size_t)(p - msg), blocks, hexes + 64 * i);
            memcpy(s->hex, hexes + 64 * i, 64);
            s->has_hex = 1;
            s->seq = column_int(&cols[0], i);
            s->count++;
        }
        Py_END_ALLOW_THREADS
        if (declined < 0) {
            PyErr_NoMemory();
            goto done;
        }
    }
    /* Pass 3 (GIL held): heads advanced, in the order the actors came. */
    if (!declined) {
        for (Py_ssize_t a = 0; a < actors; a++) {
            actor_state *s = &states[a];
            PyObject *value = Py_BuildValue("(s#LL)", (const char *)s->hex, (Py_ssize_t)64, s->seq, s->count);
            if (value == NULL || PyDict_SetItem(heads, s->key, value) < 0) {
                Py_XDECREF(value);
                goto done;
            }
            Py_DECREF(value);
        }
        result = Py_NewRef(out);
    } else {
        result = Py_NewRef(Py_None);
    }
done:
    for (Py_ssize_t a = 0; states != NULL && a < actors; a++) Py_XDECREF(states[a].key);
    PyMem_Free(table);
    PyMem_Free(slot);
    PyMem_Free(states);
    PyMem_RawFree(msg);
    Py_XDECREF(out);
    release_columns(cols, CHAIN_COLUMNS);
    return result;
}

/* _sha256_hex(data, hardware) -> str: one digest by the portable or the
 * SHA-NI compression (hardware=True; the portable one where the CPU has
 * none), for the tests that check both against hashlib. */
static PyObject *sha256_test(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer view;
    if (nargs != 2 || PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "_sha256_hex(data, hardware)");
        return NULL;
    }
    int hardware = PyObject_IsTrue(args[1]);
    unsigned char *msg = PyMem_Malloc((size_t)view.len + 72), hex[64];
    if (msg == NULL || hardware < 0) {
        PyBuffer_Release(&view);
        PyMem_Free(msg);
        return hardware < 0 ? NULL : PyErr_NoMemory();
    }
    memcpy(msg, view.buf, (size_t)view.len);
    sha256_hex(msg, (size_t)view.len, hardware ? sha_blocks : sha_blocks_portable, hex);
    PyBuffer_Release(&view);
    PyMem_Free(msg);
    return PyUnicode_FromStringAndSize((const char *)hex, 64);
}

/* ---- key hashes of the audit's key store (audit/keys.py) ----------------
 *
 * Two per-key loops over an Arrow large_string column's buffers (int64
 * offsets, UTF-8 bytes), each the exact twin of a numpy/pandas function in
 * audit/keys.py, with the GIL released (the checks' thread hashes while the
 * loop and the decoder hold it):
 *   key_hashes      = pandas.util.hash_array(keys as str objects, categorize=False):
 *                     SipHash-2-4 of the UTF-8 bytes, key "0123456789123456",
 *                     then pandas' 64-bit mix. Stored indexes (.hash.npy) hold
 *                     these values, so they must stay bit for bit the same.
 *   key_partitions  = keys._partition_chunk (the partition of a key's last 16 bytes).
 * The Python side passes only arrays without nulls; offsets are checked here.
 */

#include <stdint.h>

#define KEY_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define KEY_SIPROUND                                                           \
    do {                                                                       \
        v0 += v1; v1 = KEY_ROTL(v1, 13); v1 ^= v0; v0 = KEY_ROTL(v0, 32);      \
        v2 += v3; v3 = KEY_ROTL(v3, 16); v3 ^= v2;                             \
        v0 += v3; v3 = KEY_ROTL(v3, 21); v3 ^= v0;                             \
        v2 += v1; v1 = KEY_ROTL(v1, 17); v1 ^= v2; v2 = KEY_ROTL(v2, 32);      \
    } while (0)

static uint64_t key_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t key_siphash(const unsigned char *in, uint64_t n, uint64_t k0, uint64_t k1) {
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    uint64_t b = n << 56;
    const unsigned char *end = in + (n - n % 8);
    for (; in != end; in += 8) {
        uint64_t m = key_le64(in);
        v3 ^= m;
        KEY_SIPROUND; KEY_SIPROUND;
        v0 ^= m;
    }
    for (int i = (int)(n % 8) - 1; i >= 0; i--) b |= ((uint64_t)in[i]) << (8 * i);
    v3 ^= b;
    KEY_SIPROUND; KEY_SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    KEY_SIPROUND; KEY_SIPROUND; KEY_SIPROUND; KEY_SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* The buffers of one call: offsets (n + 1 int64), data, and out (n items of
 * `width` bytes); 0 with an exception set when they do not fit together. */
static int key_buffers(PyObject *const *args, Py_ssize_t nargs, const char *name, Py_ssize_t width,
                       Py_buffer *views) {
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "%s(offsets, data, out) takes 3 arguments", name);
        return 0;
    }
    if (PyObject_GetBuffer(args[0], &views[0], PyBUF_SIMPLE) < 0) return 0;
    if (PyObject_GetBuffer(args[1], &views[1], PyBUF_SIMPLE) < 0) { PyBuffer_Release(&views[0]); return 0; }
    if (PyObject_GetBuffer(args[2], &views[2], PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&views[0]); PyBuffer_Release(&views[1]); return 0;
    }
    Py_ssize_t n = views[0].len / 8 - 1;
    int ok = views[0].len % 8 == 0 && n >= 0 && views[2].len == n * width;
    if (ok) {
        const int64_t *off = (const int64_t *)views[0].buf;
        for (Py_ssize_t i = 0; i < n && ok; i++) ok = off[i] >= 0 && off[i] <= off[i + 1];
        ok = ok && (n == 0 || off[n] <= views[1].len);
    }
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s: offsets, data and out do not fit together", name);
        for (int k = 0; k < 3; k++) PyBuffer_Release(&views[k]);
        return 0;
    }
    return 1;
}

static PyObject *key_hashes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer views[3];
    if (!key_buffers(args, nargs, "key_hashes", 8, views)) return NULL;
    const int64_t *off = (const int64_t *)views[0].buf;
    const unsigned char *data = (const unsigned char *)views[1].buf;
    uint64_t *out = (uint64_t *)views[2].buf;
    Py_ssize_t n = views[0].len / 8 - 1;
    const unsigned char key[16] = "0123456789123456";  /* pandas' _default_hash_key */
    uint64_t k0 = key_le64(key), k1 = key_le64(key + 8);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t v = key_siphash(data + off[i], (uint64_t)(off[i + 1] - off[i]), k0, k1);
        v ^= v >> 30;  /* pandas' _hash_ndarray mix */
        v *= 0xBF58476D1CE4E5B9ULL;
        v ^= v >> 27;
        v *= 0x94D049BB133111EBULL;
        v ^= v >> 31;
        out[i] = v;
    }
    Py_END_ALLOW_THREADS
    for (int k = 0; k < 3; k++) PyBuffer_Release(&views[k]);
    Py_RETURN_NONE;
}

static PyObject *key_partitions(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer views[3];
    if (!key_buffers(args, nargs, "key_partitions", 2, views)) return NULL;
    const int64_t *off = (const int64_t *)views[0].buf;
    const unsigned char *data = (const unsigned char *)views[1].buf;
    uint16_t *out = (uint16_t *)views[2].buf;
    Py_ssize_t n = views[0].len / 8 - 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t start = off[i], end = off[i + 1];
        uint64_t sum = 0;
        for (int64_t j = 1; j <= 16; j++) {  /* keys._TAIL, keys._WEIGHTS */
            uint64_t weight = ((uint64_t)j * 0x9E3779B1ULL) | 1ULL;
            if (end - j >= start) sum += ((uint64_t)data[end - j] + 1ULL) * weight;
        }
        sum += (uint64_t)(end - start) * 0x85EBCA6BULL;
        sum ^= sum >> 17;
        sum *= 0xED5AD4BBULL;
        sum ^= sum >> 11;
        out[i] = (uint16_t)(sum % 256ULL);  /* keys.PARTS */
    }
    Py_END_ALLOW_THREADS
    for (int k = 0; k < 3; k++) PyBuffer_Release(&views[k]);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"go_events", (PyCFunction)(void (*)(void))go_events, METH_FASTCALL,
     "go_events(subjects, payloads, snapshot_prefix) -> (columns, todo); see _fastdecode.go_events"},
    {"deliveries", (PyCFunction)(void (*)(void))deliveries, METH_FASTCALL,
     "deliveries(buf, pos, sid, prefix, limit, end_seq, seqs, stamps, subjects, payloads) -> (pos, done); "
     "see _scan._deliveries"},
    {"chain_hashes", (PyCFunction)(void (*)(void))chain_hashes, METH_FASTCALL,
     "chain_hashes(rows, columns, heads) -> bytes | None; see export.chain.chain_hashes"},
    {"_sha256_hex", (PyCFunction)(void (*)(void))sha256_test, METH_FASTCALL,
     "_sha256_hex(data, hardware) -> str: the tests' check of both SHA-256 compressions"},
    {"key_hashes", (PyCFunction)(void (*)(void))key_hashes, METH_FASTCALL,
     "key_hashes(offsets, data, out); see audit.keys.key_hashes"},
    {"key_partitions", (PyCFunction)(void (*)(void))key_partitions, METH_FASTCALL,
     "key_partitions(offsets, data, out); see audit.keys._partition_chunk"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cfast", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cfast(void) {
    PyObject *m = PyModule_Create(&module);
#if HAVE_SHA_NI
    if (cpu_has_sha()) sha_blocks = sha_blocks_ni;
#endif
    if (m != NULL && PyModule_AddIntConstant(m, "SHA_NI", sha_blocks != sha_blocks_portable) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
