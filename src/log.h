/*  log.h - one line per event on stderr, safe from any thread.

    The level is set once at start-up (before actors start) and only read
    afterwards, so it is the one piece of process-wide state rtwsd has.
*/
#ifndef RTWS_LOG_H_INCLUDED
#define RTWS_LOG_H_INCLUDED

typedef enum {
    RTWS_LOG_ERROR = 0,
    RTWS_LOG_WARN  = 1,
    RTWS_LOG_INFO  = 2,
    RTWS_LOG_DEBUG = 3
} rtws_log_level_t;

//  Sets the level; returns -1 when name is not error|warn|info|debug.
int rtws_log_set_level_name (const char *name);
void rtws_log_set_level (rtws_log_level_t level);
//  "text" (the default) or "json": one JSON object per line with ts,
//  level, component and msg. Returns -1 for any other name.
int rtws_log_set_format_name (const char *name);
rtws_log_level_t rtws_log_level (void);

void rtws_log (rtws_log_level_t level, const char *component, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

//  Names the calling thread (at most 15 characters are kept), so that
//  top -H, ps -L and perf tell rtwsd's actors and service threads apart.
void rtws_thread_name (const char *name);

#define log_error(c, ...) rtws_log (RTWS_LOG_ERROR, c, __VA_ARGS__)
#define log_warn(c, ...)  rtws_log (RTWS_LOG_WARN, c, __VA_ARGS__)
#define log_info(c, ...)  rtws_log (RTWS_LOG_INFO, c, __VA_ARGS__)
#define log_debug(c, ...) do { if (rtws_log_level () >= RTWS_LOG_DEBUG) \
                               rtws_log (RTWS_LOG_DEBUG, c, __VA_ARGS__); } while (0)

#endif
