/*  log.c - timestamped log lines on stderr.

    Each line is formatted into a local buffer and written with one write(2),
    so lines from different actor threads never interleave.
*/
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

//  Written at start-up (and on SIGHUP), read by every thread: atomic for
//  the sanitizers.
static _Atomic int s_level = RTWS_LOG_INFO;
static _Atomic int s_json = 0;

static const char *s_names [] = { "error", "warn", "info", "debug" };

void
rtws_log_set_level (rtws_log_level_t level)
{
    atomic_store (&s_level, (int) level);
}

rtws_log_level_t
rtws_log_level (void)
{
    return (rtws_log_level_t) atomic_load (&s_level);
}

int
rtws_log_set_level_name (const char *name)
{
    for (int i = 0; i < 4; i++)
        if (name && strcmp (name, s_names [i]) == 0) {
            rtws_log_set_level ((rtws_log_level_t) i);
            return 0;
        }
    return -1;
}

int
rtws_log_set_format_name (const char *name)
{
    if (name && strcmp (name, "text") == 0)
        atomic_store (&s_json, 0);
    else
    if (name && strcmp (name, "json") == 0)
        atomic_store (&s_json, 1);
    else
        return -1;
    return 0;
}

//  Appends text to out as the inside of a JSON string; returns the new end.
static size_t
s_json_escape (char *out, size_t at, size_t size, const char *text, size_t len)
{
    static const char hex [] = "0123456789abcdef";
    for (size_t i = 0; i < len && at + 7 < size; i++) {
        unsigned char c = (unsigned char) text [i];
        if (c == '"' || c == '\\') {
            out [at++] = '\\';
            out [at++] = (char) c;
        }
        else
        if (c < 0x20) {
            out [at++] = '\\';
            out [at++] = 'u';
            out [at++] = '0';
            out [at++] = '0';
            out [at++] = hex [c >> 4];
            out [at++] = hex [c & 15];
        }
        else
            out [at++] = (char) c;
    }
    return at;
}

void
rtws_log (rtws_log_level_t level, const char *component, const char *fmt, ...)
{
    if ((int) level > atomic_load (&s_level))
        return;
    char line [2048];
    struct timeval tv;
    gettimeofday (&tv, NULL);
    struct tm tm;
    gmtime_r (&tv.tv_sec, &tm);
    int n = snprintf (line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s %s: ",
                      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                      tm.tm_hour, tm.tm_min, tm.tm_sec, (int) (tv.tv_usec / 1000),
                      s_names [level], component);
    va_list args;
    va_start (args, fmt);
    int m = vsnprintf (line + n, sizeof line - (size_t) n - 1, fmt, args);
    va_end (args);
    size_t len = (size_t) n + (m < 0 ? 0 : (size_t) m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    if (atomic_load (&s_json)) {
        //  One JSON object per line: {"ts":..,"level":..,"component":..,"msg":..}
        char json [4096];
        size_t at = (size_t) snprintf (json, sizeof json,
            "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"level\":\"%s\",\"component\":\"",
            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
            (int) (tv.tv_usec / 1000), s_names [level]);
        at = s_json_escape (json, at, sizeof json, component, strlen (component));
        at += (size_t) snprintf (json + at, sizeof json - at, "\",\"msg\":\"");
        at = s_json_escape (json, at, sizeof json, line + n, len - (size_t) n);
        at += (size_t) snprintf (json + at, sizeof json - at, "\"}\n");
        ssize_t rc = write (STDERR_FILENO, json, at < sizeof json ? at : sizeof json - 1);
        (void) rc;
        return;
    }
    line [len++] = '\n';
    ssize_t rc = write (STDERR_FILENO, line, len);
    (void) rc;
}

void
rtws_thread_name (const char *name)
{
    char cut [16];
    snprintf (cut, sizeof cut, "%s", name);
    prctl (PR_SET_NAME, cut, 0, 0, 0);
}
