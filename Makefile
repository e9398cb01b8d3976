# The loadable SQLite extension from csrc/ alone: a C compiler is all it needs
# (the SQLite headers are vendored in csrc/sqlite/). pip builds the same library
# from the same sources into the Python package (setup.py).
#
#   make loadable        dist/facevec0.so (.dylib on macOS, .dll on Windows)
#   make test-loadable   tests/sql/*.sql in the sqlite3 shell, against that library
#   make clean           removes it
#
# CC, CFLAGS (default -O3) and SQLITE3 (the shell) may be given on the command line.

CFLAGS ?= -O3
SQLITE3 ?= sqlite3
DIST ?= dist

VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' facevec/_version.py)
SOURCES := $(sort $(wildcard csrc/*.c))
HEADERS := $(wildcard csrc/*.h csrc/sqlite/*.h)

ifeq ($(OS),Windows_NT)
  SUFFIX := dll
  SHARED := -shared
else ifeq ($(shell uname -s),Darwin)
  SUFFIX := dylib
  SHARED := -dynamiclib -fPIC
else
  SUFFIX := so
  SHARED := -shared -fPIC
endif

LOADABLE := $(DIST)/facevec0.$(SUFFIX)
# Hidden by default: the library exports sqlite3_facevec_init only (see setup.py).
FLAGS := -Wall -Wextra -fvisibility=hidden -Icsrc -Icsrc/sqlite -DFACEVEC_VERSION='"$(VERSION)"'

.PHONY: loadable test-loadable clean

loadable: $(LOADABLE)

$(LOADABLE): $(SOURCES) $(HEADERS) facevec/_version.py
	@mkdir -p $(DIST)
	$(CC) $(CFLAGS) $(FLAGS) $(SHARED) $(SOURCES) -o $@ -lm

# The shell's .load takes the path without its suffix, and finds the entry point by name.
test-loadable: $(LOADABLE)
	SQLITE3=$(SQLITE3) sh tests/sql/check.sh $(basename $(LOADABLE)) tests/sql/*.sql

clean:
	rm -f $(DIST)/facevec0.so $(DIST)/facevec0.dylib $(DIST)/facevec0.dll
