skinlesion_fuzzer(plain_csv SRCS plain_csv.cc DEPS skinlesion_data)
