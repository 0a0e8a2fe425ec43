# pitbox: `make serve` starts it, `make test` tests it, `make bench` measures it.
# Each target installs the missing Debian packages first, then builds.
BUILD ?= out
CMAKE_FLAGS ?=
PITBOX_STATE ?= /var/lib/pitbox

.PHONY: all deps build test unit integration serve bench format clean

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

# The daemon (pitbox serve) arrives with issue 3; until then this builds and shows how to run a box.
serve: build
	@echo "pitbox is built: $(BUILD)/bin/pitbox"
	@echo "run a box:        $(BUILD)/bin/pitbox run -t -- bash"
	@echo "(the daemon, pitbox serve, is not there yet)"

bench: build
	bench/run.sh $(BUILD)

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD)
