# The gateway's request parsers (services/gateway/api.h; needs the protos, which the
# fuzz build compiles for it).
if(TARGET skinlesion_gateway_api)
  skinlesion_fuzzer(gateway_api SRCS gateway_api.cc DEPS skinlesion_gateway_api)
endif()
