<?php
/**
 * Where WordPress keeps the protocol's profile fields (UserRelay_Facts::PROFILE_FIELDS): which
 * are columns of the users row, which are user meta, and which a delivery never edits.
 * Nothing here reads or writes the database.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * The profile fields, mapped to WordPress.
 */
final class UserRelay_Profile {

	/** Profile fields that are columns of the users row, as field => column (and wp_insert_user() field). */
	const COLUMNS = array(
		'display_name' => 'display_name',
		'url'          => 'user_url',
	);

	/**
	 * Profile fields no edit carries over: registered is set once, when the user is created;
	 * renamed_from names the login a rename replaced.
	 */
	const NOT_EDITED = array( 'registered', 'renamed_from' );

	/**
	 * The profile fields an edit writes and a digest compares, in the protocol's order.
	 *
	 * @return string[]
	 */
	public static function edited(): array {
		return array_values( array_diff( UserRelay_Facts::PROFILE_FIELDS, self::NOT_EDITED ) );
	}

	/**
	 * A profile field's name for wp_insert_user() and WP_User.
	 *
	 * @param string $field A profile field of the protocol.
	 */
	public static function user_field( string $field ): string {
		return self::COLUMNS[ $field ] ?? $field;
	}

	/**
	 * A user's value of a profile field.
	 *
	 * @param WP_User $user  The user.
	 * @param string  $field A profile field of the protocol.
	 */
	public static function value( WP_User $user, string $field ): string {
		if ( in_array( $field, UserRelay_Facts::PROFILE_META_FIELDS, true ) ) {
			return (string) get_user_meta( (int) $user->ID, $field, true );
		}
		return (string) $user->{self::user_field( $field )};
	}
}
