skinlesion_fuzzer(image_decode SRCS image_decode.cc DEPS skinlesion_image)
