skinlesion_fuzzer(isic_csv SRCS isic_csv.cc DEPS skinlesion_data)
