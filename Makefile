# pitbox: `make serve` starts it, `make test` tests it, `make bench` measures it.
# Each target installs the missing Debian packages first, then builds.
BUILD ?= out
CMAKE_FLAGS ?=
PITBOX_STATE ?= /var/lib/pitbox

.PHONY: all deps build test unit integration serve bench api-docs format clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/build.ninja: | deps
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

build: deps $(BUILD)/build.ninja
	@ninja -C $(BUILD)

unit: build
	cd $(BUILD) && ctest --output-on-failure -j2

integration: build
	tests/run.sh $(BUILD)

test: unit integration

# The daemon on 127.0.0.1:7070 (PITBOX_LISTEN), state in $(PITBOX_STATE). Ctrl-C stops it;
# the boxes keep running and the next start finds them again. The Debian base image is built in
# the background on the first start (about a minute); it is the default image once built.
serve: build
	$(BUILD)/bin/pitbox --state $(PITBOX_STATE) serve --build-base

bench: build
	bench/run.sh $(BUILD)

api-docs:
	scripts/api_docs.py

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD)
