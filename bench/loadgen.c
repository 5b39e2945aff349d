/*
 * loadgen: the load client of echosrv's benchmark (bench/run.ts builds it with cc). One process, one thread,
 * non-blocking sockets and epoll: it does per round trip exactly the syscalls an echo server does (one send, one
 * receive), so one loadgen keeps one server process busy; it reports its own CPU time over wall time so a reader
 * can tell when the client, not the server, was the limit.
 *
 *   loadgen bulk     PORT SECONDS            one connection: write a verified pattern while reading it back
 *   loadgen pingpong PORT SECONDS CONNS      CONNS connections, each with one 64-byte message in flight
 *   loadgen connect  PORT SECONDS PARALLEL   PARALLEL at a time: connect, echo 64 bytes, close
 *   loadgen idle     PORT CONNS [SETTLE]     open CONNS connections, echo 64 bytes on each, wait SETTLE seconds
 *                                            (default 1), print a line, hold them until standard input closes
 *   loadgen latency  PORT SECONDS CONNS      latency under load: open CONNS connections all at once (each sends its
 *                                            first 64-byte message as soon as it is connected), ping-pong on all of
 *                                            them; the first BURST seconds (connection set-up included) and the
 *                                            SECONDS measured after the warm-up are reported separately
 *
 * Every mode first runs WARMUP seconds unmeasured, then SECONDS measured, and prints one JSON object on standard
 * output. Every byte that comes back is compared with what was sent; a mismatch or an early end of stream makes
 * "ok" false with an "error" string. Environment: LOADGEN_HOST (default 127.0.0.1), LOADGEN_WARMUP (default 0.5),
 * LOADGEN_SERVER_PID (the server's process: its CPU time over the measured window, and in idle mode its resident
 * memory before the first connection and after the last, are read from /proc and reported). Latency mode also reads
 * LOADGEN_START_AT (a wall-clock time in Unix milliseconds: several loadgen processes given the same one open their
 * connections together), LOADGEN_BURST (the seconds of the connection burst, default 1) and LOADGEN_DRAIN (how long
 * to wait at the end for replies still owed, default 10 s).
 *
 * Latencies go into a log-linear histogram (exact to 2 ms, then within 0.1%, up to days), so a tail of seconds is
 * measured, not clipped. In latency mode a message counts in the phase it was sent in and its latency is taken
 * when its reply arrives, however late: after the measured window no new messages are sent and the replies still
 * owed are awaited (up to LOADGEN_DRAIN; those that never come are counted as unanswered, at the age they reached).
 * So a connection the server starves cannot drop out of the figures.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MESSAGE 64
#define PATTERN (1 << 20)
#define BULK_WRITE (64 * 1024)
#define BULK_READ (256 * 1024)
#define SOURCE_ADDRESSES 16 /* connect mode spreads over 127.0.0.1..16 so ports in TIME_WAIT do not run out */

static const char *host = "127.0.0.1";
static int port;
static double warmup = 0.5;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/*
 * The server's CPU time (user + system, all threads) from /proc, when LOADGEN_SERVER_PID names it; else -1. Its
 * system part (the kernel working for it: system calls and, on loopback, part of the TCP work of both ends) goes
 * to *system, so a reader can tell the kernel's share of an echo from the server program's own.
 */
static int server_pid;

static double server_cpu_seconds(double *system) {
  *system = -1;
  if (server_pid <= 0) return -1;
  char path[64], text[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", server_pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = 0;
  char *p = strrchr(text, ')');
  unsigned long utime = 0, stime = 0;
  /* after ") ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime */
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2) return -1;
  *system = (double)stime / (double)sysconf(_SC_CLK_TCK);
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* The server's resident memory in KiB (VmRSS), or -1. */
static long server_rss_kib(void) {
  if (server_pid <= 0) return -1;
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", server_pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long kib = -1;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
  }
  fclose(f);
  return kib;
}

/* Busy and total CPU time of the whole machine (all cores) from /proc/stat, in clock ticks. */
static void machine_ticks(double *busy, double *total) {
  *busy = *total = -1;
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return;
  unsigned long long v[8] = {0};
  int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                   &v[7]);
  fclose(f);
  if (got < 5) return;
  double all = 0;
  for (int i = 0; i < 8; i++) all += (double)v[i];
  *total = all;
  *busy = all - (double)v[3] - (double)v[4]; /* minus idle and iowait */
}

static double cpu_seconds(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec * 1e-6 + (double)u.ru_stime.tv_sec +
         (double)u.ru_stime.tv_usec * 1e-6;
}

/* Prints {"ok":false,...} and exits: the orchestrator reports the run as failed with this reason. */
static void fail(const char *mode, const char *format, ...) {
  char reason[256];
  va_list args;
  va_start(args, format);
  vsnprintf(reason, sizeof reason, format, args);
  va_end(args);
  printf("{\"mode\":\"%s\",\"ok\":false,\"error\":\"%s\"}\n", mode, reason);
  fflush(stdout);
  exit(1);
}

static struct sockaddr_in server_address(void) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) fail("setup", "bad host %s", host);
  return a;
}

static void raise_fd_limit(void) {
  struct rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

static void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* A blocking connect, then non-blocking from there on. */
static int connect_to_server(const char *mode) {
  struct sockaddr_in a = server_address();
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(mode, "socket: %s", strerror(errno));
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) fail(mode, "connect: %s", strerror(errno));
  set_nodelay(fd);
  return fd;
}

static void set_nonblocking(int fd) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* ---- latency histogram ---- */

/*
 * Log-linear buckets, in microseconds: exact below 2048 us, then 1024 buckets per power of two (within 0.1%), up
 * to 2^40 us. Enough for a tail of seconds (a starved connection) without clipping, and small enough to print.
 */
#define SUB_BITS 10
#define SUB (1 << SUB_BITS)
#define LINEAR (2 * SUB)
#define TOP_BIT 40
#define BUCKETS (LINEAR + (TOP_BIT - SUB_BITS - 1) * SUB)

struct histogram {
  uint32_t *counts;
  uint64_t count;
  uint64_t max_us;
};

static void histogram_init(struct histogram *h) {
  h->counts = calloc(BUCKETS, sizeof *h->counts);
  if (!h->counts) {
    fprintf(stderr, "loadgen: out of memory\n");
    exit(1);
  }
  h->count = 0;
  h->max_us = 0;
}

static int bucket_of(uint64_t us) {
  if (us >= (1ULL << TOP_BIT)) us = (1ULL << TOP_BIT) - 1;
  if (us < LINEAR) return (int)us;
  int k = 63 - __builtin_clzll(us); /* 11 .. TOP_BIT - 1 */
  return LINEAR + (k - SUB_BITS - 1) * SUB + (int)((us >> (k - SUB_BITS)) & (SUB - 1));
}

/* The lowest value of a bucket. */
static uint64_t bucket_value(int b) {
  if (b < LINEAR) return (uint64_t)b;
  int k = (b - LINEAR) / SUB + SUB_BITS + 1;
  return (uint64_t)(SUB + (b - LINEAR) % SUB) << (k - SUB_BITS);
}

static void record(struct histogram *h, double seconds) {
  double us = seconds * 1e6;
  uint64_t v = us < 0 ? 0 : (uint64_t)us;
  h->counts[bucket_of(v)]++;
  h->count++;
  if (v > h->max_us) h->max_us = v;
}

static uint64_t percentile(const struct histogram *h, double p) {
  if (h->count == 0) return 0;
  uint64_t rank = (uint64_t)(p * (double)h->count);
  if (rank >= h->count) rank = h->count - 1;
  uint64_t seen = 0;
  for (int b = 0; b < BUCKETS; b++) {
    seen += h->counts[b];
    if (seen > rank) return bucket_value(b);
  }
  return h->max_us;
}

/* "p50_us":..,"p99_us":..,"p999_us":..,"max_us":.. */
static void print_percentiles(const struct histogram *h) {
  printf("\"p50_us\":%llu,\"p99_us\":%llu,\"p999_us\":%llu,\"max_us\":%llu", (unsigned long long)percentile(h, 0.5),
         (unsigned long long)percentile(h, 0.99), (unsigned long long)percentile(h, 0.999),
         (unsigned long long)h->max_us);
}

/* "hist":[[lowest value of the bucket in us, count], ...] for every bucket in use: the merge of several loadgen
 * processes' results, and the percentile plot, are computed from it. */
static void print_histogram(const struct histogram *h) {
  printf("\"hist\":[");
  int first = 1;
  for (int b = 0; b < BUCKETS; b++) {
    if (!h->counts[b]) continue;
    printf("%s[%llu,%u]", first ? "" : ",", (unsigned long long)bucket_value(b), h->counts[b]);
    first = 0;
  }
  printf("]");
}

/* The histogram of the ping-pong and connect modes. */
static struct histogram histogram;

static void record_latency(double seconds) {
  record(&histogram, seconds);
}

/* ---- the measured window: warmup, then SECONDS measured, with the client's own CPU use ---- */

struct window {
  double start, end, cpu_start, cpu_end, server_start, server_end, server_system_start, server_system_end;
  double machine_busy_start, machine_total_start, machine_busy_end, machine_total_end;
  int measuring, done;
};

static void window_tick(struct window *w, double t, double seconds) {
  if (!w->measuring && t >= w->start) {
    w->measuring = 1;
    w->start = t;
    w->cpu_start = cpu_seconds();
    w->server_start = server_cpu_seconds(&w->server_system_start);
    machine_ticks(&w->machine_busy_start, &w->machine_total_start);
    w->end = t + seconds;
  } else if (w->measuring && t >= w->end) {
    w->done = 1;
    w->end = t;
    w->cpu_end = cpu_seconds();
    w->server_end = server_cpu_seconds(&w->server_system_end);
    machine_ticks(&w->machine_busy_end, &w->machine_total_end);
  }
}

static double window_busy(const struct window *w) {
  return (w->cpu_end - w->cpu_start) / (w->end - w->start);
}

/*
 * How many cores the whole machine kept busy in the window (client, server and anything else running), or -1: with
 * client_busy and server_busy it tells how much other work shared the machine during the measurement.
 */
static double window_machine_busy(const struct window *w) {
  double total = w->machine_total_end - w->machine_total_start;
  if (w->machine_total_start < 0 || w->machine_total_end < 0 || total <= 0) return -1;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  return (w->machine_busy_end - w->machine_busy_start) / total * (double)cores;
}

/* The server's CPU time over wall time in the window, or -1 when unknown. */
static double window_server_busy(const struct window *w) {
  if (w->server_start < 0 || w->server_end < 0) return -1;
  return (w->server_end - w->server_start) / (w->end - w->start);
}

/* The system (kernel) part of window_server_busy, or -1 when unknown. */
static double window_server_system(const struct window *w) {
  if (w->server_system_start < 0 || w->server_system_end < 0) return -1;
  return (w->server_system_end - w->server_system_start) / (w->end - w->start);
}

/* ---- bulk: one connection, write the pattern while reading it back ---- */

static unsigned char pattern[PATTERN + BULK_READ + BULK_WRITE];

static void fill_pattern(void) {
  uint32_t x = 2463534242u;
  for (size_t i = 0; i < PATTERN; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    pattern[i] = (unsigned char)x;
  }
  /* The tail repeats the head, so any window of the stream is contiguous in memory. */
  memcpy(pattern + PATTERN, pattern, BULK_READ + BULK_WRITE);
}

static void run_bulk(double seconds) {
  static unsigned char in[BULK_READ];
  fill_pattern();
  int fd = connect_to_server("bulk");
  set_nonblocking(fd);
  uint64_t sent = 0, received = 0, measured = 0;
  int write_open = 1;
  struct window w = {.start = now() + warmup};
  struct pollfd p = {.fd = fd};
  for (;;) {
    p.events = POLLIN | (write_open ? POLLOUT : 0);
    if (poll(&p, 1, 5000) == 0) fail("bulk", "no progress for 5 s (sent %llu, received %llu)",
                                     (unsigned long long)sent, (unsigned long long)received);
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = recv(fd, in, sizeof in, MSG_DONTWAIT);
      if (n == 0) break;
      if (n < 0 && errno != EAGAIN) fail("bulk", "recv: %s", strerror(errno));
      if (n > 0) {
        if (received + (uint64_t)n > sent) fail("bulk", "received more than was sent");
        if (memcmp(in, pattern + received % PATTERN, (size_t)n) != 0) {
          fail("bulk", "echoed bytes differ near offset %llu", (unsigned long long)received);
        }
        received += (uint64_t)n;
        if (w.measuring && !w.done) measured += (uint64_t)n;
      }
    }
    if (write_open && (p.revents & POLLOUT)) {
      ssize_t n = send(fd, pattern + sent % PATTERN, BULK_WRITE, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN) fail("bulk", "send: %s", strerror(errno));
      if (n > 0) sent += (uint64_t)n;
    }
    if (!w.done) {
      window_tick(&w, now(), seconds);
      if (w.done) {
        shutdown(fd, SHUT_WR); /* then read the rest: every byte sent must come back */
        write_open = 0;
      }
    }
  }
  if (received != sent) {
    fail("bulk", "end of stream after %llu of %llu bytes", (unsigned long long)received, (unsigned long long)sent);
  }
  close(fd);
  double span = w.end - w.start;
  printf("{\"mode\":\"bulk\",\"ok\":true,\"seconds\":%.3f,\"bytes\":%llu,\"verified_bytes\":%llu,"
         "\"bytes_per_s\":%.0f,\"client_busy\":%.3f,\"server_busy\":%.3f,\"server_system\":%.3f,"
         "\"machine_busy\":%.3f}\n",
         span, (unsigned long long)measured, (unsigned long long)received, (double)measured / span, window_busy(&w),
         window_server_busy(&w), window_server_system(&w), window_machine_busy(&w));
}

/* ---- ping-pong: CONNS connections, one 64-byte message in flight on each ---- */

struct peer {
  int fd;
  uint32_t got;
  uint64_t seq;
  double sent_at;
  unsigned char out[MESSAGE];
  unsigned char in[MESSAGE];
};

static void make_message(struct peer *c, uint32_t index) {
  memcpy(c->out, &c->seq, sizeof c->seq);
  memcpy(c->out + 8, &index, sizeof index);
  memset(c->out + 12, (int)(c->seq * 131u + index), MESSAGE - 12);
}

static void send_message(struct peer *c, uint32_t index, double t, const char *mode) {
  make_message(c, index);
  c->got = 0;
  c->sent_at = t;
  ssize_t n = send(c->fd, c->out, MESSAGE, MSG_DONTWAIT | MSG_NOSIGNAL);
  /* 64 bytes into an empty socket buffer are taken whole or not at all. */
  if (n != MESSAGE) fail(mode, "send returned %zd: %s", n, n < 0 ? strerror(errno) : "short write");
}

static void run_pingpong(double seconds, int conns) {
  histogram_init(&histogram);
  struct peer *peers = calloc((size_t)conns, sizeof *peers);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; i < conns; i++) {
    peers[i].fd = connect_to_server("pingpong");
    set_nonblocking(peers[i].fd);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, peers[i].fd, &ev);
  }
  struct window w = {.start = now() + warmup};
  double t = now();
  for (int i = 0; i < conns; i++) send_message(&peers[i], (uint32_t)i, t, "pingpong");
  uint64_t trips = 0;
  struct epoll_event events[256];
  while (!w.done) {
    int ready = epoll_wait(ep, events, 256, 5000);
    if (ready == 0) fail("pingpong", "no reply for 5 s");
    t = now();
    for (int e = 0; e < ready; e++) {
      uint32_t i = events[e].data.u32;
      struct peer *c = &peers[i];
      ssize_t n = recv(c->fd, c->in + c->got, MESSAGE - c->got, MSG_DONTWAIT);
      if (n == 0) fail("pingpong", "the server closed a connection");
      if (n < 0) {
        if (errno == EAGAIN) continue;
        fail("pingpong", "recv: %s", strerror(errno));
      }
      c->got += (uint32_t)n;
      if (c->got < MESSAGE) continue;
      if (memcmp(c->in, c->out, MESSAGE) != 0) fail("pingpong", "echoed message differs");
      if (w.measuring) {
        record_latency(t - c->sent_at);
        trips++;
      }
      c->seq++;
      send_message(c, i, t, "pingpong");
    }
    window_tick(&w, t, seconds);
  }
  for (int i = 0; i < conns; i++) close(peers[i].fd);
  double span = w.end - w.start;
  printf("{\"mode\":\"pingpong\",\"ok\":true,\"conns\":%d,\"seconds\":%.3f,\"round_trips\":%llu,"
         "\"round_trips_per_s\":%.0f,\"client_busy\":%.3f,\"server_busy\":%.3f,\"server_system\":%.3f,"
         "\"machine_busy\":%.3f,",
         conns, span, (unsigned long long)trips, (double)trips / span, window_busy(&w), window_server_busy(&w),
         window_server_system(&w), window_machine_busy(&w));
  print_percentiles(&histogram);
  printf("}\n");
}

/* ---- connect: PARALLEL at a time, connect, echo 64 bytes, close ---- */

struct attempt {
  int fd;
  uint32_t got;
  int connected;
  double started;
  unsigned char in[MESSAGE];
};

static unsigned char hello[MESSAGE];
static uint32_t next_source;

static void start_attempt(struct attempt *a, uint32_t slot, int ep, double t) {
  struct sockaddr_in to = server_address();
  struct sockaddr_in from = {.sin_family = AF_INET};
  from.sin_addr.s_addr = htonl(0x7f000001u + (next_source++ % SOURCE_ADDRESSES));
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("connect", "socket: %s", strerror(errno));
  int one = 1;
  /* Pick the source port at connect() time, from the whole 4-tuple space, not at bind() time. */
  setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&from, sizeof from) < 0) fail("connect", "bind: %s", strerror(errno));
  set_nodelay(fd);
  if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0 && errno != EINPROGRESS) {
    fail("connect", "connect: %s", strerror(errno));
  }
  a->fd = fd;
  a->got = 0;
  a->connected = 0;
  a->started = t;
  struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = slot};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static void run_connect(double seconds, int parallel) {
  histogram_init(&histogram);
  memset(hello, 'h', sizeof hello);
  struct attempt *slots = calloc((size_t)parallel, sizeof *slots);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct window w = {.start = now() + warmup};
  double t = now();
  for (int i = 0; i < parallel; i++) start_attempt(&slots[i], (uint32_t)i, ep, t);
  uint64_t done = 0;
  struct epoll_event events[256];
  while (!w.done) {
    int ready = epoll_wait(ep, events, 256, 5000);
    if (ready == 0) fail("connect", "no progress for 5 s");
    t = now();
    for (int e = 0; e < ready; e++) {
      uint32_t i = events[e].data.u32;
      struct attempt *a = &slots[i];
      if (!a->connected) {
        int error = 0;
        socklen_t len = sizeof error;
        getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &error, &len);
        if (error) fail("connect", "connect: %s", strerror(error));
        if (send(a->fd, hello, MESSAGE, MSG_NOSIGNAL) != MESSAGE) fail("connect", "send: %s", strerror(errno));
        a->connected = 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_MOD, a->fd, &ev);
        continue;
      }
      ssize_t n = recv(a->fd, a->in + a->got, MESSAGE - a->got, MSG_DONTWAIT);
      if (n == 0) fail("connect", "the server closed before echoing");
      if (n < 0) {
        if (errno == EAGAIN) continue;
        fail("connect", "recv: %s", strerror(errno));
      }
      a->got += (uint32_t)n;
      if (a->got < MESSAGE) continue;
      if (memcmp(a->in, hello, MESSAGE) != 0) fail("connect", "echoed message differs");
      close(a->fd); /* also leaves the epoll set */
      if (w.measuring) {
        record_latency(t - a->started);
        done++;
      }
      start_attempt(a, i, ep, t);
    }
    window_tick(&w, t, seconds);
  }
  for (int i = 0; i < parallel; i++) close(slots[i].fd);
  double span = w.end - w.start;
  printf("{\"mode\":\"connect\",\"ok\":true,\"parallel\":%d,\"seconds\":%.3f,\"connections\":%llu,"
         "\"connections_per_s\":%.0f,\"client_busy\":%.3f,\"server_busy\":%.3f,\"server_system\":%.3f,"
         "\"machine_busy\":%.3f,",
         parallel, span, (unsigned long long)done, (double)done / span, window_busy(&w), window_server_busy(&w),
         window_server_system(&w), window_machine_busy(&w));
  print_percentiles(&histogram);
  printf("}\n");
}

/* ---- latency: CONNS connections opened at once, then ping-pong; the burst and the measured window apart ---- */

/* The phase a message was sent in: its latency counts there, whenever its reply comes. */
enum phase { PHASE_BURST, PHASE_WARMUP, PHASE_MEASURED };

struct lpeer {
  int fd;
  int connected;
  int waiting; /* a message is in flight */
  int phase;   /* of the message in flight */
  uint32_t got;
  uint32_t seq;
  uint64_t measured; /* round trips of messages sent in the measured window */
  double sent_at;    /* for the first message: when connect() was called, so the set-up counts */
  int echoed;        /* a first reply came */
  unsigned char out[MESSAGE];
  unsigned char in[MESSAGE];
};

static double env_seconds(const char *name, double otherwise) {
  const char *text = getenv(name);
  return text && *text ? atof(text) : otherwise;
}

/* Sleeps until the wall-clock time LOADGEN_START_AT (Unix ms), so that several loadgen processes start together. */
static void wait_for_start(void) {
  double at = env_seconds("LOADGEN_START_AT", 0) / 1000;
  for (;;) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    double left = at - ((double)t.tv_sec + (double)t.tv_nsec * 1e-9);
    if (left <= 0) return;
    struct timespec pause = {.tv_sec = (time_t)left, .tv_nsec = (long)((left - (double)(time_t)left) * 1e9)};
    nanosleep(&pause, NULL);
  }
}

/* Sends the next 64-byte message (a sequence number, the connection's index, a fill that depends on both). */
static void latency_send(struct lpeer *c, uint32_t index) {
  memcpy(c->out, &c->seq, sizeof c->seq);
  memcpy(c->out + 4, &index, sizeof index);
  memset(c->out + 8, (int)(c->seq * 131u + index), MESSAGE - 8);
  c->got = 0;
  ssize_t n = send(c->fd, c->out, MESSAGE, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n != MESSAGE) fail("latency", "send returned %zd: %s", n, n < 0 ? strerror(errno) : "short write");
  c->waiting = 1;
}

static void print_latency_phase(const struct histogram *h) {
  print_percentiles(h);
  printf(",");
  print_histogram(h);
}

static void run_latency(double seconds, int conns) {
  double burst = env_seconds("LOADGEN_BURST", 1.0), drain = env_seconds("LOADGEN_DRAIN", 10.0);
  struct histogram steady, first;
  histogram_init(&steady);
  histogram_init(&first);
  struct lpeer *peers = calloc((size_t)conns, sizeof *peers);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (!peers || ep < 0) fail("latency", "setup: %s", strerror(errno));
  struct sockaddr_in to = server_address();
  wait_for_start();
  double t0 = now(), burst_end = t0 + burst;
  struct window w = {.start = burst_end + warmup};
  uint64_t owed = 0; /* messages of the burst or of the measured window still waiting for their reply */
  double connect_max = 0, first_echo_max = 0;
  for (int i = 0; i < conns; i++) {
    struct lpeer *c = &peers[i];
    struct sockaddr_in from = {.sin_family = AF_INET};
    from.sin_addr.s_addr = htonl(0x7f000001u + (next_source++ % SOURCE_ADDRESSES));
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) fail("latency", "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(c->fd, (struct sockaddr *)&from, sizeof from) < 0) fail("latency", "bind: %s", strerror(errno));
    set_nodelay(c->fd);
    c->sent_at = now();
    if (connect(c->fd, (struct sockaddr *)&to, sizeof to) < 0 && errno != EINPROGRESS) {
      fail("latency", "connect: %s", strerror(errno));
    }
    c->waiting = 1;
    c->phase = PHASE_BURST;
    owed++;
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) fail("latency", "epoll_ctl: %s", strerror(errno));
  }
  uint64_t trips = 0, burst_trips = 0, unanswered_burst = 0, unanswered = 0;
  double drain_until = 0;
  struct epoll_event events[256];
  for (;;) {
    /* A short timeout: the window must end on time even when the server answers nobody. */
    int ready = epoll_wait(ep, events, 256, 50);
    double t = now();
    for (int e = 0; e < ready; e++) {
      uint32_t i = events[e].data.u32;
      struct lpeer *c = &peers[i];
      if (!c->connected) {
        int error = 0;
        socklen_t len = sizeof error;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len);
        if (error) fail("latency", "connect: %s", strerror(error));
        if (!(events[e].events & EPOLLOUT)) continue;
        c->connected = 1;
        if (t - c->sent_at > connect_max) connect_max = t - c->sent_at;
        /* The first message keeps sent_at from before connect(): its round trip includes the set-up. */
        latency_send(c, i);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        continue;
      }
      ssize_t n = recv(c->fd, c->in + c->got, MESSAGE - c->got, MSG_DONTWAIT);
      if (n == 0) fail("latency", "the server closed a connection");
      if (n < 0) {
        if (errno == EAGAIN) continue;
        fail("latency", "recv: %s", strerror(errno));
      }
      c->got += (uint32_t)n;
      if (c->got < MESSAGE) continue;
      if (memcmp(c->in, c->out, MESSAGE) != 0) fail("latency", "echoed message differs");
      c->waiting = 0;
      if (!c->echoed) {
        c->echoed = 1;
        if (t - t0 > first_echo_max) first_echo_max = t - t0;
      }
      if (c->phase == PHASE_BURST) {
        record(&first, t - c->sent_at);
        burst_trips++;
        owed--;
      } else if (c->phase == PHASE_MEASURED) {
        record(&steady, t - c->sent_at);
        c->measured++;
        trips++;
        owed--;
      }
      if (w.done) continue; /* after the window: no new messages, only the replies still owed */
      c->seq++;
      c->sent_at = t;
      c->phase = t < burst_end ? PHASE_BURST : w.measuring ? PHASE_MEASURED : PHASE_WARMUP;
      if (c->phase != PHASE_WARMUP) owed++;
      latency_send(c, i);
    }
    if (!w.done) {
      window_tick(&w, t, seconds);
      if (w.done) drain_until = t + drain;
      continue;
    }
    if (owed == 0) break;
    if (t >= drain_until) {
      /* Replies that never came: counted at the age they reached, so a starved connection shows in the tail. */
      for (int i = 0; i < conns; i++) {
        struct lpeer *c = &peers[i];
        if (!c->waiting || c->phase == PHASE_WARMUP) continue;
        if (c->phase == PHASE_BURST) {
          record(&first, t - c->sent_at);
          unanswered_burst++;
        } else {
          record(&steady, t - c->sent_at);
          unanswered++;
        }
      }
      break;
    }
  }
  uint64_t starved = 0, least = UINT64_MAX, most = 0;
  for (int i = 0; i < conns; i++) {
    if (peers[i].measured == 0) starved++;
    if (peers[i].measured < least) least = peers[i].measured;
    if (peers[i].measured > most) most = peers[i].measured;
    close(peers[i].fd);
  }
  uint64_t unechoed = 0;
  for (int i = 0; i < conns; i++) unechoed += !peers[i].echoed;
  double span = w.end - w.start;
  printf("{\"mode\":\"latency\",\"ok\":true,\"conns\":%d,\"seconds\":%.3f,\"round_trips\":%llu,"
         "\"round_trips_per_s\":%.0f,\"client_busy\":%.3f,\"server_busy\":%.3f,\"server_system\":%.3f,"
         "\"machine_busy\":%.3f,\"starved_conns\":%llu,\"conn_rt_min\":%llu,\"conn_rt_max\":%llu,"
         "\"unanswered\":%llu,",
         conns, span, (unsigned long long)trips, (double)trips / span, window_busy(&w), window_server_busy(&w),
         window_server_system(&w), window_machine_busy(&w), (unsigned long long)starved,
         (unsigned long long)least, (unsigned long long)most, (unsigned long long)unanswered);
  print_latency_phase(&steady);
  printf(",\"burst\":{\"seconds\":%.3f,\"round_trips\":%llu,\"connect_max_us\":%.0f,\"first_echo_max_us\":%.0f,"
         "\"never_echoed\":%llu,\"unanswered\":%llu,",
         burst, (unsigned long long)burst_trips, connect_max * 1e6, first_echo_max * 1e6,
         (unsigned long long)unechoed, (unsigned long long)unanswered_burst);
  print_latency_phase(&first);
  printf("}}\n");
}

/* ---- idle: CONNS connections that each echoed once, held open until standard input closes ---- */

static void run_idle(int conns, double settle) {
  raise_fd_limit();
  long before = server_rss_kib();
  memset(hello, 'i', sizeof hello);
  int *fds = calloc((size_t)conns, sizeof *fds);
  struct timeval timeout = {.tv_sec = 10};
  for (int i = 0; i < conns; i++) {
    int fd = connect_to_server("idle");
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    if (send(fd, hello, MESSAGE, MSG_NOSIGNAL) != MESSAGE) fail("idle", "send: %s", strerror(errno));
    unsigned char in[MESSAGE];
    size_t got = 0;
    while (got < MESSAGE) {
      ssize_t n = recv(fd, in + got, MESSAGE - got, 0);
      if (n <= 0) fail("idle", "connection %d: no echo (%s)", i, n == 0 ? "closed" : strerror(errno));
      got += (size_t)n;
    }
    if (memcmp(in, hello, MESSAGE) != 0) fail("idle", "echoed message differs");
    fds[i] = fd;
  }
  /* Let the server finish what the last connections started (and its allocator settle) before looking. */
  struct timespec pause = {.tv_sec = (time_t)settle, .tv_nsec = (long)((settle - (double)(time_t)settle) * 1e9)};
  nanosleep(&pause, NULL);
  long after = server_rss_kib();
  printf("{\"mode\":\"idle\",\"ok\":true,\"conns\":%d,\"rss_before_kib\":%ld,\"rss_after_kib\":%ld,"
         "\"kib_per_conn\":%.3f}\n",
         conns, before, after, before < 0 || after < 0 ? -1.0 : (double)(after - before) / conns);
  fflush(stdout);
  char line[64];
  while (read(0, line, sizeof line) > 0) {
  }
  /* Every connection must still be open: a server that dropped idle ones would look cheaper than it is. */
  int closed = 0;
  for (int i = 0; i < conns; i++) {
    unsigned char b;
    if (recv(fds[i], &b, 1, MSG_DONTWAIT) == 0) closed++;
    close(fds[i]);
  }
  if (closed) fprintf(stderr, "loadgen idle: the server closed %d of %d connections\n", closed, conns);
  exit(closed ? 1 : 0);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (getenv("LOADGEN_HOST")) host = getenv("LOADGEN_HOST");
  if (getenv("LOADGEN_WARMUP")) warmup = atof(getenv("LOADGEN_WARMUP"));
  if (getenv("LOADGEN_SERVER_PID")) server_pid = atoi(getenv("LOADGEN_SERVER_PID"));
  if (argc < 4) {
    fprintf(stderr, "usage: loadgen bulk|pingpong|connect|latency PORT SECONDS [CONNS|PARALLEL] | "
                    "loadgen idle PORT CONNS\n");
    return 2;
  }
  const char *mode = argv[1];
  port = atoi(argv[2]);
  setvbuf(stdout, NULL, _IOLBF, 0);
  raise_fd_limit();
  if (strcmp(mode, "bulk") == 0) {
    run_bulk(atof(argv[3]));
  } else if (strcmp(mode, "pingpong") == 0 && argc > 4) {
    run_pingpong(atof(argv[3]), atoi(argv[4]));
  } else if (strcmp(mode, "connect") == 0 && argc > 4) {
    run_connect(atof(argv[3]), atoi(argv[4]));
  } else if (strcmp(mode, "latency") == 0 && argc > 4) {
    run_latency(atof(argv[3]), atoi(argv[4]));
  } else if (strcmp(mode, "idle") == 0) {
    run_idle(atoi(argv[3]), argc > 4 ? atof(argv[4]) : 1.0);
  } else {
    fprintf(stderr, "loadgen: unknown mode %s\n", mode);
    return 2;
  }
  return 0;
}
