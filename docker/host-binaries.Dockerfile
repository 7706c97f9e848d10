# The six binaries built on the host (`cargo build --release`), as an image of the same shape
# as the `binaries` stage of docker/build.Dockerfile: /out/<binary>, nothing else.
#
# scripts/build-images.sh --from-host copies target/release/{lighthouse,trade-processor,traders,
# pricing,pricing-web,tradectl} into a folder of its own and builds this file with that folder as
# the context; docker/Dockerfile then copies /out/* into the runtime images exactly as it does
# for the cargo-chef build. The host must run the same Debian release as the runtime base
# (bookworm: glibc 2.36) for the binaries to run in it.
FROM scratch
COPY lighthouse trade-processor traders pricing pricing-web tradectl /out/
