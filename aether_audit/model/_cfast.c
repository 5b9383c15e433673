/* _cfast: the two per-message loops of a whole-stream read, in C.
 *
 * A load spends its time in two loops that touch every message: parsing
 * the MSG/HMSG frames of the socket buffer (_scan.py) and decoding the Go
 * store's JSON (_fastdecode.py). In Python they cost ~2.2 and ~3.3 us per
 * message on this project's 2-core machine, which kept load() at 0.6-0.8 of
 * the Go client's drain; here they cost a small fraction of that.
 *
 * Each function has a pure-Python twin with the same contract, documented
 * once, on the twin (_scan._deliveries, _fastdecode.go_events); the tests
 * run the same cases against both (tests/test_decode.py, tests/test_scan_parse.py).
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
    {"key_hashes", (PyCFunction)(void (*)(void))key_hashes, METH_FASTCALL,
     "key_hashes(offsets, data, out); see audit.keys.key_hashes"},
    {"key_partitions", (PyCFunction)(void (*)(void))key_partitions, METH_FASTCALL,
     "key_partitions(offsets, data, out); see audit.keys._partition_chunk"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cfast", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cfast(void) { return PyModule_Create(&module); }
