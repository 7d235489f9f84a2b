# Sourced by launch/paper_tables.sh and launch/tune.sh.
#
# f_d_workdir <runs> <short> <setup>: the workdir holding f_D for a setup. Class
# and data level share the class-level base's f_D (same data, seeds and recipe);
# a data-level base started with no class level in <runs> trains its own and
# keeps it; noisy and semi train their own.
f_d_workdir() {
  local class="$1/$2_class_paper" base="$1/$2_$3_paper"
  case $3 in
    noisy | semi) echo "$base" ;;
    data) if [ ! -d "$class" ] || compgen -G "$base/seed_*/pretrain" > /dev/null; then
            echo "$base"; else echo "$class"; fi ;;
    *) echo "$class" ;;
  esac
}
