# Sourced by the benches (and their hooks): the figures their tables print.
# Runs of two things are interleaved, so ratios are taken pair by pair.

# median: the median of the numbers on stdin (the mean of the middle two, to
# 3 decimals, for an even count).
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

# pairs FILE_A FILE_B [DECIMALS]: the ratio of each line of FILE_A to the same
# line of FILE_B (a pair of interleaved runs), as "median (min–max)"; lines
# whose FILE_B figure is 0 are left out. DECIMALS: 2 unless given.
pairs() {
    paste "$1" "$2" | awk '{ if ($2 > 0) print $1 / $2 }' | sort -n |
        awk -v d="${3:-2}" '{a[NR]=$1} END {m = (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2; f = "%." d "f (%." d "f–%." d "f)"; printf f, m, a[1], a[NR]}'
}

# quotient A B: A / B to 2 decimals.
quotient() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }

# peak_mb: the largest of the KB figures on stdin (GNU time's %M), in MB.
peak_mb() { sort -n | tail -1 | awk '{ printf "%d", $1 / 1024 }'; }

# bytes DIR: the bytes of the files under DIR.
bytes() { du -sb "$1" | cut -f1; }

# timed NAME CMD...: runs CMD under GNU time (its stdout in .out); appends its
# wall seconds (to the millisecond) to NAME.secs, its CPU seconds to NAME.cpu
# and its peak RSS in KB to NAME.kb. Stops the script if CMD fails.
timed() {
    name=$1; shift
    t0=$(date +%s%N)
    /usr/bin/time -f "%U %S %M" -o .t "$@" >.out 2>.err || { cat .err >&2; exit 1; }
    t1=$(date +%s%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", (b - a) / 1e9 }' >>"$name.secs"
    awk '{ printf "%.2f\n", $1 + $2 }' .t >>"$name.cpu"
    awk '{ print $3 }' .t >>"$name.kb"
}
