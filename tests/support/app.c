/* The test app for tests/docker.rs and tests/init.rs: a small static program
 * (gcc -static) that runs in a FROM scratch image and behaves like the apps
 * kmsenv fronts. Every mode prints what it saw on stdout, one `key=value` a line.
 *
 *   app                      pid, uid/gid, then every variable (CMD of the example image)
 *   app report NAME...       pid, uid/gid, each NAME's value; a /proc/self/fd/N value's content too
 *   app wait-term CODE       "ready"; on SIGTERM print "term" and exit CODE at once;
 *                            on SIGUSR1 print "usr1" (a signal kmsenv --init forwarded)
 *   app orphans N reaped|zombies
 *                            makes N orphans (double fork) that exit, then waits until
 *                            all are reaped by someone else, or all are zombies; prints
 *                            zombies=K (bounded poll of /proc; exit 3 when the state never comes)
 *   app storm                "ready"; forks children (each leaving an orphan) and checks
 *                            every exit code it waits for, until SIGTERM; counts SIGUSR1;
 *                            exits 42 when no exit code was lost, else 1
 *   app kill-storm PID SIG N sends N signals SIG to PID
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static volatile sig_atomic_t term_code = -1;
static volatile sig_atomic_t stop = 0;
static volatile sig_atomic_t usr1 = 0;

static void on_term_exit(int sig) {
    (void)sig;
    static const char msg[] = "term\n";
    if (write(1, msg, sizeof msg - 1) < 0) _exit(2);
    _exit(term_code);
}
static void on_term_stop(int sig) { (void)sig; stop = 1; }
static void on_usr1(int sig) { (void)sig; usr1++; }
static void on_usr1_print(int sig) {
    (void)sig;
    static const char msg[] = "usr1\n";
    if (write(1, msg, sizeof msg - 1) < 0) _exit(2);
}

static void handle(int sig, void (*fn)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, NULL) != 0) { perror("sigaction"); exit(2); }
}

static void ids(void) {
    printf("pid=%d\nppid=%d\nuid=%d\ngid=%d\ngroups=%d\n", (int)getpid(), (int)getppid(), (int)getuid(),
           (int)getgid(), getgroups(0, NULL));
}

static int report(int argc, char **argv) {
    ids();
    for (int i = 0; i < argc; i++) {
        const char *v = getenv(argv[i]);
        printf("%s=%s\n", argv[i], v ? v : "<unset>");
        if (v && strncmp(v, "/proc/self/fd/", 14) == 0) {
            FILE *f = fopen(v, "r");
            if (!f) { printf("%s:file-error=%s\n", argv[i], strerror(errno)); continue; }
            char buf[4096];
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            buf[n] = 0;
            fclose(f);
            printf("%s:file=%s\n", argv[i], buf);
        }
    }
    return 0;
}

/* State letter of /proc/PID/stat, 0 when the process is gone. */
static char state_of(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return (p && p[1] == ' ') ? p[2] : '?';
}

/* Zombies anywhere in this PID namespace's /proc. */
static int count_zombies(void) {
    DIR *d = opendir("/proc");
    if (!d) { perror("opendir /proc"); exit(2); }
    int z = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid > 0 && state_of(pid) == 'Z') z++;
    }
    closedir(d);
    return z;
}

static int orphans(int n, int want_reaped) {
    ids();
    int fds[2];
    if (pipe(fds) != 0) { perror("pipe"); return 2; }
    pid_t *kids = calloc((size_t)n, sizeof *kids);
    int report_fds[2];
    if (pipe(report_fds) != 0) { perror("pipe"); return 2; }
    pid_t middle = fork();
    if (middle < 0) { perror("fork"); return 2; }
    if (middle == 0) {
        /* The middle process starts the N and exits: they become orphans. */
        for (int i = 0; i < n; i++) {
            pid_t k = fork();
            if (k < 0) _exit(2);
            if (k == 0) {
                char b;
                close(fds[1]);
                /* Wait until the middle process is gone, then exit. */
                while (read(fds[0], &b, 1) < 0 && errno == EINTR) {}
                _exit(0);
            }
            if (write(report_fds[1], &k, sizeof k) != sizeof k) _exit(2);
        }
        _exit(0);
    }
    close(report_fds[1]);
    for (int i = 0; i < n; i++) {
        if (read(report_fds[0], &kids[i], sizeof kids[i]) != sizeof kids[i]) { perror("read"); return 2; }
    }
    int st;
    if (waitpid(middle, &st, 0) != middle) { perror("waitpid"); return 2; }
    /* The middle is reaped: the N are orphans now. Let them exit. */
    close(fds[1]);
    close(fds[0]);
    /* Bounded poll of /proc for the state asked for (30 s). */
    struct timespec tick = {0, 2000000};
    for (int round = 0; round < 15000; round++) {
        int gone = 0, zombie = 0;
        for (int i = 0; i < n; i++) {
            char s = state_of(kids[i]);
            if (s == 0) gone++;
            else if (s == 'Z') zombie++;
        }
        if ((want_reaped && gone == n) || (!want_reaped && zombie == n)) {
            printf("orphans=%d\nreaped=%d\nzombies=%d\n", n, gone, count_zombies());
            return 0;
        }
        nanosleep(&tick, NULL);
    }
    printf("never-reached=%s\nzombies=%d\n", want_reaped ? "reaped" : "zombies", count_zombies());
    return 3;
}

static int storm(void) {
    handle(SIGUSR1, on_usr1);
    handle(SIGTERM, on_term_stop);
    printf("ready\n");
    fflush(stdout);
    long rounds = 0, bad = 0;
    while (!stop) {
        int code = (int)(rounds % 100);
        pid_t p = fork();
        if (p < 0) { if (errno == EAGAIN) continue; perror("fork"); return 2; }
        if (p == 0) {
            pid_t o = fork(); /* an orphan for PID 1 to reap */
            if (o == 0) _exit(code);
            _exit(code);
        }
        int st;
        pid_t w;
        while ((w = waitpid(p, &st, 0)) < 0 && errno == EINTR) {}
        if (w != p || !WIFEXITED(st) || WEXITSTATUS(st) != code) bad++;
        rounds++;
    }
    printf("usr1=%d\nrounds=%ld\nbad=%ld\n", (int)usr1, rounds, bad);
    fflush(stdout);
    return bad ? 1 : 42;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        ids();
        for (char **e = environ; *e; e++) printf("%s\n", *e);
        return 0;
    }
    if (strcmp(argv[1], "report") == 0) return report(argc - 2, argv + 2);
    if (strcmp(argv[1], "wait-term") == 0 && argc == 3) {
        term_code = atoi(argv[2]);
        handle(SIGTERM, on_term_exit);
        handle(SIGUSR1, on_usr1_print);
        printf("ready\n");
        fflush(stdout);
        for (;;) pause();
    }
    if (strcmp(argv[1], "orphans") == 0 && argc == 4)
        return orphans(atoi(argv[2]), strcmp(argv[3], "reaped") == 0);
    if (strcmp(argv[1], "storm") == 0) return storm();
    if (strcmp(argv[1], "kill-storm") == 0 && argc == 5) {
        pid_t pid = (pid_t)atoi(argv[2]);
        int sig = atoi(argv[3]), n = atoi(argv[4]);
        for (int i = 0; i < n; i++)
            if (kill(pid, sig) != 0) { perror("kill"); return 2; }
        printf("sent=%d\n", n);
        return 0;
    }
    fprintf(stderr, "app: unknown mode\n");
    return 2;
}
