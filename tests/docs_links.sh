#!/usr/bin/env bash
# The documentation's links hold: every markdown link [..](path) in README.md and docs/*.md names a file
# that exists (relative to the document), and every file of the repository that the text names in
# backquotes (`docs/..`, `bench/..`, `tools/..`, `config/..`, `slurm/..`, `src/..`, `include/..`, `tests/..`,
# `singularity/..`, `docker/..`) exists. Usage: docs_links.sh REPOSITORY_ROOT
set -u
root=${1:?usage: docs_links.sh REPOSITORY_ROOT}
cd "$root" || exit 2
bad=0 checked=0
for doc in README.md docs/*.md; do
  dir=$(dirname "$doc")
  # [text](target): local targets only, anchors dropped.
  while IFS= read -r target; do
    target=${target%%#*}
    [ -z "$target" ] && continue
    checked=$((checked + 1))
    [ -e "$dir/$target" ] || { echo "$doc: link to '$target', which does not exist"; bad=1; }
  done < <(grep -oE '\]\([^)]+\)' "$doc" | sed -E 's/^\]\((.*)\)$/\1/' | grep -vE '^(https?:|mailto:)')
  # `path` of a repository file or folder (globs and placeholders like <N> are skipped).
  while IFS= read -r path; do
    case "$path" in *'*'*|*'<'*|*'...'*) continue ;; esac
    path=${path%%:*}  # file:line
    checked=$((checked + 1))
    [ -e "$path" ] || { echo "$doc: names '$path', which does not exist"; bad=1; }
  done < <(grep -oE '`(docs|bench|tools|config|slurm|src|include|tests|singularity|docker)/[^` ]*`' "$doc" | tr -d '`')
done
echo "checked $checked links and paths in README.md and docs/"
exit $bad
